// The thin Unity side: a MonoBehaviour that runs the core's MateServer off the main thread and
// applies what it is told on the main thread through UniVRM. Kept thin on purpose: everything
// that can be checked without Unity (the wire, the JSON, the checks, the connection) is in
// Core and tested under Mono; this file cannot run outside the Unity editor or player.
//
// Scene setup: add this component to a GameObject, set Address (the `[unity] address` of
// mate's config, 127.0.0.1:5555 by default), and either assign a loaded VRM instance (VRM 0.x:
// its VRMBlendShapeProxy; VRM 1.0: its Vrm10Instance) and an Animator, or let load_vrm load one.

using System;
using System.Collections.Generic;
using UnityEngine;

namespace Mate.Unity
{
    public sealed class MateAvatar : MonoBehaviour, IAvatar
    {
        [Tooltip("host:port mate's bridge connects to ([unity] address in mate's config)")]
        public string Address = "127.0.0.1:5555";
        [Tooltip("The avatar's Animator; play_animation plays its states by name")]
        public Animator Animator;
        [Tooltip("VRM 0.x: the model's blend shape proxy")]
        public VRM.VRMBlendShapeProxy BlendShapeProxy;
        [Tooltip("VRM 1.0: the model's instance")]
        public UniVRM10.Vrm10Instance Vrm10;
        [Tooltip("Blink by itself every few seconds while blink is on")]
        public bool AutoBlink = true;

        private MateServer server;
        private readonly Queue<Action> mainThread = new Queue<Action>();
        private readonly Dictionary<string, float> weights = new Dictionary<string, float>();
        // Each expression's key, made once per name rather than every frame.
        private readonly Dictionary<string, VRM.BlendShapeKey> keys0 = new Dictionary<string, VRM.BlendShapeKey>();
        private readonly Dictionary<string, UniVRM10.ExpressionKey> keys10 = new Dictionary<string, UniVRM10.ExpressionKey>();
        private string expression;
        private float target, from, transitionStart, transitionSeconds;
        private bool blink = true;
        private float nextBlink;

        private void OnEnable()
        {
            server = new MateServer(Address, this);
            server.Log += what => Debug.Log("mate: " + what);
            server.Start();
            nextBlink = Time.time + 3f;
        }

        private void OnDisable()
        {
            if (server != null) server.Dispose();
            server = null;
        }

        // IAvatar: called on the server's thread. Checks that need the scene wait for the main
        // thread; the reply says the command was taken, and problems go to the log.
        public void LoadVrm(string path)
        {
            if (!System.IO.File.Exists(path)) throw new AvatarException("no VRM file at " + path);
            Post(() => LoadVrmNow(path));
        }

        public void SetExpression(string name, float intensity, int transitionMs)
        {
            Post(() =>
            {
                if (expression != null && expression != name) weights[expression] = 0f;
                from = expression == name ? target : 0f;
                expression = name;
                target = intensity;
                transitionStart = Time.time;
                transitionSeconds = transitionMs / 1000f;
            });
        }

        public void PlayAnimation(string name, bool loop)
        {
            Post(() =>
            {
                if (Animator == null) { Debug.LogWarning("mate: no Animator for animation " + name); return; }
                Animator.CrossFadeInFixedTime(name, 0.2f);
            });
        }

        public void SetBlink(bool enabled)
        {
            Post(() => blink = enabled);
        }

        private void Post(Action action)
        {
            lock (mainThread) mainThread.Enqueue(action);
        }

        private void Update()
        {
            while (true)
            {
                Action next;
                lock (mainThread)
                {
                    if (mainThread.Count == 0) break;
                    next = mainThread.Dequeue();
                }
                next();
            }
            if (expression != null)
            {
                float p = transitionSeconds <= 0f ? 1f : Mathf.Clamp01((Time.time - transitionStart) / transitionSeconds);
                weights[expression] = Mathf.Lerp(from, target, p);
            }
            float blinkWeight = 0f;
            if (blink && AutoBlink)
            {
                float t = Time.time - nextBlink;
                if (t >= 0f && t < 0.16f) blinkWeight = 1f - Mathf.Abs(t - 0.08f) / 0.08f;
                else if (t >= 0.16f) nextBlink = Time.time + UnityEngine.Random.Range(3f, 5f);
            }
            Apply(blinkWeight);
        }

        private void Apply(float blinkWeight)
        {
            if (BlendShapeProxy != null)
            {
                foreach (var kv in weights)
                    BlendShapeProxy.ImmediatelySetValue(Cached(keys0, kv.Key, Key0), kv.Value);
                BlendShapeProxy.ImmediatelySetValue(VRM.BlendShapeKey.CreateFromPreset(VRM.BlendShapePreset.Blink), blinkWeight);
            }
            if (Vrm10 != null)
            {
                foreach (var kv in weights)
                    Vrm10.Runtime.Expression.SetWeight(Cached(keys10, kv.Key, Key10), kv.Value);
                Vrm10.Runtime.Expression.SetWeight(UniVRM10.ExpressionKey.Blink, blinkWeight);
            }
        }

        private static TKey Cached<TKey>(Dictionary<string, TKey> cache, string name, Func<string, TKey> make)
        {
            TKey key;
            if (!cache.TryGetValue(name, out key))
            {
                key = make(name);
                cache[name] = key;
            }
            return key;
        }

        // mate's expression names are VRM 1.0's presets (happy, angry, sad, relaxed, surprised,
        // neutral); VRM 0.x calls them differently. Anything else is a custom clip by that name.
        private static VRM.BlendShapeKey Key0(string name)
        {
            VRM.BlendShapePreset preset;
            return Enum.TryParse(Preset0(name), true, out preset) && preset != VRM.BlendShapePreset.Unknown
                ? VRM.BlendShapeKey.CreateFromPreset(preset)
                : VRM.BlendShapeKey.CreateUnknown(name);
        }

        private static UniVRM10.ExpressionKey Key10(string name)
        {
            UniVRM10.ExpressionPreset preset;
            return Enum.TryParse(name.ToLowerInvariant(), false, out preset) && preset != UniVRM10.ExpressionPreset.custom
                ? UniVRM10.ExpressionKey.CreateFromPreset(preset)
                : UniVRM10.ExpressionKey.CreateCustom(name);
        }

        private static string Preset0(string name)
        {
            switch (name.ToLowerInvariant())
            {
                case "happy": return "Joy";
                case "angry": return "Angry";
                case "sad": return "Sorrow";
                case "relaxed": return "Fun";
                case "neutral": return "Neutral";
                default: return name;
            }
        }

        private async void LoadVrmNow(string path)
        {
            try
            {
                var instance = await UniVRM10.Vrm10.LoadPathAsync(path, canLoadVrm0X: true);
                if (Vrm10 != null) Destroy(Vrm10.gameObject);
                Vrm10 = instance;
                BlendShapeProxy = null;
                Animator = instance.GetComponent<Animator>();
            }
            catch (Exception e)
            {
                Debug.LogError("mate: cannot load " + path + ": " + e.Message);
            }
        }
    }
}
