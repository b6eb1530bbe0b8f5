"""Schemathesis (its CLI, in a subprocess) against the OpenAPI document a running
``trioxide agent`` serves: generated requests, valid and invalid, never get a 500 - bad
input is a 4xx with a typed error body, overload a 503 - and every answer conforms to the
document (status, content type, body schema, headers).

Bounded: a fixed seed and ``--max-examples`` per operation, loopback only (the schema's
URL and the API are the agent's ``127.0.0.1`` address; proxies are cleared), a few
seconds. Checks: all of schemathesis's but ``not_a_server_error`` (it counts the 503s of
overload and a busy reservoir as failures: ours is ``no_internal_error`` below, which
allows 503 only), ``positive_data_acceptance`` (the document cannot express every rule
the boundary checks - a reservoir larger than the sled's RAM, a VMM that is not
registered, a socket address - so schema-valid requests are legitimately refused with a
4xx) and the authentication checks (the API has none).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from trioxide.actors.wire.asgi import App, Route
from trioxide.actors.wire.server import serve_app

from ._procs import rack_process

SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]
RUN_TIMEOUT = 120.0  # seconds; a run takes ~10
HOOKS = '''
import schemathesis


@schemathesis.check
def no_internal_error(ctx, response, case):
    """A 5xx other than 503 (retry later) is a bug of the API."""
    if response.status_code >= 500 and response.status_code != 503:
        raise AssertionError(f"{response.status_code}: {response.text[:300]}")
'''
EXCLUDED = "not_a_server_error,positive_data_acceptance,ignored_auth,object_level_authorization"


async def schemathesis_run(
    url: str,
    tmp_path: Path,
    *,
    phases: str = "coverage,fuzzing,stateful",
    exclude: str = EXCLUDED,
    more: tuple[str, ...] = (),
) -> tuple[int, str]:
    (tmp_path / "st_hooks.py").write_text(HOOKS)
    env = {
        k: v for k, v in os.environ.items() if "proxy" not in k.lower()
    }  # loopback only, directly
    env.update(
        PYTHONPATH=str(tmp_path),
        SCHEMATHESIS_HOOKS="st_hooks",
        NO_PROXY="*",
        NO_COLOR="1",
    )
    cmd = [
        *SCHEMATHESIS, "run", f"{url}/openapi.json",
        "--max-examples", "15", "--seed", "1", "--no-shrink",
        "--phases", phases,
        "--checks", "all", "--exclude-checks", exclude,
        "--request-timeout", "10",
        *more,
    ]  # fmt: skip
    with trio.fail_after(RUN_TIMEOUT):
        done = await trio.run_process(
            cmd, capture_stdout=True, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, check=False
        )
    return done.returncode, done.stdout.decode(errors="replace")


async def test_schemathesis_finds_no_500_and_no_nonconforming_answer(tmp_path: Path) -> None:
    async with rack_process("agent", trace_dir=tmp_path) as agent:
        status, output = await schemathesis_run(agent.url, tmp_path)
        assert agent.proc.returncode is None, "the agent died under the fuzzer"
    assert status == 0, output[-6000:]
    assert "Selected: 8/8" in output and "Tested: 8" in output, output[-3000:]
    assert " passed" in output and "failures" not in output.lower(), output[-3000:]


async def test_schemathesis_finds_no_500_in_the_hypervisor(tmp_path: Path) -> None:
    """The same against the hypervisor (propolis-server's API and the admin routes),
    without its long poll: a schema-valid state-monitor request waits (by design) until
    its generation is published, which a fuzzer's request never sees."""
    async with rack_process("hypervisor", "--time-scale", "0.01", trace_dir=tmp_path) as hv:
        status, output = await schemathesis_run(
            hv.url,
            tmp_path,
            phases="coverage,fuzzing",
            more=("--exclude-operation-id", "instance_state_monitor"),
        )
        assert hv.proc.returncode is None, "the hypervisor died under the fuzzer"
    assert status == 0, output[-6000:]
    assert "Tested: " in output and " passed" in output, output[-3000:]
    assert "failures" not in output.lower(), output[-3000:]


async def test_the_run_fails_on_an_internal_error(tmp_path: Path) -> None:
    """The control: the same run against an API that answers 500 fails, naming our check
    (so the test above can fail)."""

    async def broken(request: object) -> None:
        raise RuntimeError("a bug")

    app = App("broken", "1", [Route("GET", "/things/{id}", "thing_get", broken)])
    async with trio.open_nursery() as nursery:
        addr = await nursery.start(serve_app, app, "127.0.0.1", 0)
        status, output = await schemathesis_run(
            f"http://{addr}", tmp_path, phases="fuzzing", exclude=EXCLUDED + ",unsupported_method"
        )
        nursery.cancel_scope.cancel()
    assert status != 0, output[-3000:]
    assert "no_internal_error" in output and "RuntimeError: a bug" in output, output[-3000:]
