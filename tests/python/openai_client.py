"""Drives mate's API with the real `openai` package (and `prometheus_client` for /metrics).

Run by tests/tests/api.rs: `python3 openai_client.py SCENARIO BASE_URL [API_KEY]`. Each
scenario prints JSON lines the Rust test reads: what the client saw, as the client saw it.
"""

import json
import sys
import urllib.request

import openai


def say(**fields):
    print(json.dumps(fields), flush=True)


def client(base, key, **kw):
    return openai.OpenAI(base_url=base + "/v1", api_key=key or "none", max_retries=0, **kw)


def basics(base, key):
    c = client(base, key)
    models = c.models.list()
    say(step="models", ids=[m.id for m in models.data])

    r = c.chat.completions.create(
        model="anything",
        messages=[
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "Say hello."}]},
        ],
        max_tokens=8,
        temperature=0,
    )
    say(
        step="chat",
        text=r.choices[0].message.content,
        role=r.choices[0].message.role,
        finish=r.choices[0].finish_reason,
        usage=r.usage.model_dump(),
        model=r.model,
    )

    chunks, usage, finish = [], None, None
    stream = c.chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            if choice.delta.content:
                chunks.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    say(step="stream", chunks=chunks, finish=finish, usage=usage)

    r = c.completions.create(model="anything", prompt="Once upon a time", max_tokens=6, temperature=0)
    say(step="completion", text=r.choices[0].text, finish=r.choices[0].finish_reason)

    try:
        c.chat.completions.create(
            model="anything", messages=[{"role": "user", "content": "hi"}], n=2
        )
        say(step="n=2", error=None)
    except openai.BadRequestError as e:
        say(step="n=2", error="BadRequestError", status=e.status_code, param=e.body.get("param"))

    try:
        c.completions.create(model="anything", prompt="the sea " * 2000, max_tokens=4)
        say(step="too long", error=None)
    except openai.BadRequestError as e:
        say(step="too long", error="BadRequestError", status=e.status_code, code=e.code)

    if key:
        try:
            client(base, "wrong-key").models.list()
            say(step="bad key", error=None)
        except openai.AuthenticationError as e:
            say(step="bad key", error="AuthenticationError", status=e.status_code)


def metrics(base, key):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
    from prometheus_client.parser import text_string_to_metric_families as classic

    request = urllib.request.Request(base + "/metrics", headers={"Authorization": f"Bearer {key}"})
    text = urllib.request.urlopen(request).read().decode()
    families = {}
    for family in om(text):
        families[family.name] = {
            "type": family.type,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }
    say(step="openmetrics", families=families)
    say(step="classic", names=sorted({f.name for f in classic(text)}))


def stream(base, key, max_tokens):
    """A long streamed reply, each piece printed as it arrives (the test kills the LLM worker
    meanwhile), then the whole text and how it ended."""
    c = client(base, key, timeout=300)
    pieces, finish = [], None
    for chunk in c.chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": "Tell me a long story about a cat and a robot."}],
        max_tokens=int(max_tokens),
        temperature=0,
        stream=True,
    ):
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
                say(step="piece", text=choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    say(step="end", text="".join(pieces), finish=finish)


if __name__ == "__main__":
    scenario, base = sys.argv[1], sys.argv[2]
    key = sys.argv[3] if len(sys.argv) > 3 else ""
    if scenario == "basics":
        basics(base, key)
    elif scenario == "metrics":
        metrics(base, key)
    elif scenario == "stream":
        stream(base, key, sys.argv[4] if len(sys.argv) > 4 else 200)
    else:
        sys.exit(f"unknown scenario {scenario}")
