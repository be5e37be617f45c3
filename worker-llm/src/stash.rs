//! Conversations set aside, so that alternating ones do not each decode their whole history
//! again. The KV cache holds one conversation (sequence 0); when a prompt leaves most of it
//! behind (another API client's conversation, a plain completion), its state is copied out to
//! host memory with llama.cpp's per-sequence state API, and copied back when a prompt that
//! continues it comes again. A few entries, least recently used out first, under a byte cap.
//!
//! The decisions are pure ([`plan`]); [`crate::engine::Session`] carries them out.

/// The longest prefix two token lists share.
pub fn common_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A conversation swapped back in must save at least this many tokens over the cache.
pub const MIN_GAIN: usize = 16;
/// A conversation shorter than this is cheaper to decode again than to keep.
pub const MIN_KEEP: usize = 64;
/// Most conversations kept aside.
pub const MAX_ENTRIES: usize = 4;

/// One conversation set aside: the tokens its state holds, and the state.
#[derive(Debug)]
pub struct Stashed<T, S> {
    pub tokens: Vec<T>,
    pub state: S,
    pub bytes: usize,
}

/// The conversations set aside, least recently used first.
#[derive(Debug)]
pub struct Stash<T, S> {
    entries: Vec<Stashed<T, S>>,
    max_bytes: usize,
}

impl<T: PartialEq, S> Stash<T, S> {
    /// `max_bytes` 0 keeps nothing.
    pub fn new(max_bytes: usize) -> Self {
        Stash {
            entries: Vec::new(),
            max_bytes,
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// The entry sharing the longest prefix with `prompt`, and how long that is.
    fn best(&self, prompt: &[T]) -> Option<(usize, usize)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt)))
            .max_by_key(|&(i, common)| (common, i))
    }

    pub fn take(&mut self, i: usize) -> Stashed<T, S> {
        self.entries.remove(i)
    }

    /// Keeps a conversation (replacing one with the same tokens), dropping the least recently
    /// used ones beyond the caps. One larger than the byte cap is not kept.
    pub fn put(&mut self, entry: Stashed<T, S>) {
        if entry.bytes > self.max_bytes {
            return;
        }
        self.entries.retain(|e| e.tokens != entry.tokens);
        self.entries.push(entry);
        while self.entries.len() > MAX_ENTRIES || self.bytes() > self.max_bytes {
            self.entries.remove(0);
        }
    }

    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What to do with the cache before decoding a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Decode after the prefix the cache shares with the prompt.
    Keep,
    /// Set the cache aside, and bring back entry `i`, which shares more.
    Swap(usize),
    /// Set the cache aside (the prompt leaves most of it), then decode as with `Keep`.
    SetAside,
}

pub fn plan<T: PartialEq, S>(cached: &[T], prompt: &[T], stash: &Stash<T, S>) -> Plan {
    if !stash.enabled() {
        return Plan::Keep;
    }
    let here = common_prefix(cached, prompt);
    if let Some((i, there)) = stash.best(prompt) {
        if there >= here + MIN_GAIN {
            return Plan::Swap(i);
        }
    }
    let left_behind = cached.len() - here;
    if left_behind >= MIN_KEEP && here < cached.len() / 2 {
        return Plan::SetAside;
    }
    Plan::Keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tokens: Vec<u32>) -> Stashed<u32, ()> {
        let bytes = tokens.len() * 10;
        Stashed {
            tokens,
            state: (),
            bytes,
        }
    }

    fn seq(start: u32, n: u32) -> Vec<u32> {
        (start..start + n).collect()
    }

    #[test]
    fn a_prompt_that_continues_the_cache_keeps_it() {
        let stash: Stash<u32, ()> = Stash::new(1 << 20);
        let cached = seq(0, 200);
        let mut prompt = cached.clone();
        prompt.extend(seq(1000, 20));
        assert_eq!(plan(&cached, &prompt, &stash), Plan::Keep);
    }

    #[test]
    fn a_prompt_that_leaves_the_cache_sets_it_aside_and_its_return_swaps_it_back() {
        let mut stash = Stash::new(1 << 20);
        let a = seq(0, 200);
        let b = seq(5000, 150);
        assert_eq!(plan(&a, &b, &stash), Plan::SetAside);
        stash.put(entry(a.clone()));
        let mut a_next = a.clone();
        a_next.extend(seq(900, 30));
        assert_eq!(plan(&b, &a_next, &stash), Plan::Swap(0));
        // A short conversation is not worth keeping.
        assert_eq!(plan(&seq(0, 30), &b, &stash), Plan::Keep);
    }

    #[test]
    fn the_stash_keeps_the_most_recent_under_its_caps() {
        let mut stash = Stash::new(5000);
        for i in 0..6 {
            stash.put(entry(seq(i * 1000, 100)));
        }
        assert_eq!(stash.len(), MAX_ENTRIES);
        assert_eq!(stash.best(&seq(5000, 100)), Some((3, 100)));
        stash.put(entry(seq(9000, 300)));
        assert!(stash.bytes() <= 5000, "{}", stash.bytes());
        stash.put(entry(seq(0, 600)));
        assert!(
            stash.best(&seq(0, 600)).is_none_or(|(_, c)| c < 600),
            "too big to keep"
        );
        let off: Stash<u32, ()> = Stash::new(0);
        assert_eq!(plan(&seq(0, 200), &seq(500, 200), &off), Plan::Keep);
    }
}
