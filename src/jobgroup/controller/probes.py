"""Readiness probes, run by the controller (asyncio): HTTP GET or TCP connect to a node's
address, or a command run inside the node. One attempt = `probe_once`; the schedule (initial
delay, interval, failure threshold) lives in the controller, which records the result."""

from __future__ import annotations

import asyncio

from jobgroup.spec.models import ReadinessProbe


def describe(probe: ReadinessProbe, address: str) -> str:
    if probe.http is not None:
        return f"GET http://{address}:{probe.http.port}{probe.http.path}"
    if probe.tcp is not None:
        return f"TCP {address}:{probe.tcp.port}"
    return f"command {probe.command!r}"


async def probe_once(probe: ReadinessProbe, address: str, timeout: float,
                     command_argv: list[str] | None = None,
                     env: dict[str, str] | None = None) -> tuple[bool, str]:
    """(passed, why-not) for one attempt, bounded by `timeout` seconds."""
    try:
        return await asyncio.wait_for(_attempt(probe, address, command_argv, env), timeout)
    except asyncio.TimeoutError:
        return False, f"no answer within {timeout:g}s"
    except OSError as e:
        return False, e.strerror or str(e)


async def _attempt(probe: ReadinessProbe, address: str, command_argv: list[str] | None,
                   env: dict[str, str] | None) -> tuple[bool, str]:
    if probe.http is not None:
        reader, writer = await asyncio.open_connection(address, probe.http.port)
        try:
            writer.write(f"GET {probe.http.path} HTTP/1.0\r\nHost: {address}\r\n"
                         "User-Agent: jobgroup-probe\r\n\r\n".encode())
            await writer.drain()
            line = (await reader.readline()).decode(errors="replace").split()
        finally:
            writer.close()
        if len(line) < 2 or not line[1].isdigit():
            return False, "not an HTTP answer"
        code = int(line[1])
        want = probe.http.status
        ok = code == want if want is not None else 200 <= code < 400
        return ok, f"HTTP {code}" + (f" (expected {want})" if want is not None else "")
    if probe.tcp is not None:
        _, writer = await asyncio.open_connection(address, probe.tcp.port)
        writer.close()
        return True, ""
    assert command_argv is not None
    proc = await asyncio.create_subprocess_exec(
        *command_argv, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    return code == 0, f"exit code {code}"
