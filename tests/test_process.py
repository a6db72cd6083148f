"""The gateway as a user runs it: the real CLI in a subprocess, with its embedded Redis under DATA_DIR."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.embedded_redis import free_port
from gateway.settings import DEMO_RULES
from tests.chat import connect
from tests.readiness import wait_until_ready

SECRET_WORDS = "my order 41115 has not arrived, my email is jane@example.com"


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PORT", "HOST"}}
    env.update(DATA_DIR=str(data_dir), LOG_FORMAT="json", LOG_LEVEL="info", **extra)
    return env


def cli(data_dir: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=cli_env(data_dir, **extra),
                          capture_output=True, text=True, timeout=30, check=False)


class Running:
    def __init__(self, process: asyncio.subprocess.Process, base: str) -> None:
        self.process = process
        self.base = base

    async def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(self.process.communicate(), 20)
        return stderr.decode()


@pytest.fixture
async def run_gateway(http: aiohttp.ClientSession) -> AsyncIterator[Callable[..., Any]]:
    started: list[Running] = []

    async def start(data_dir: Path, **extra: str) -> Running:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", "--port", str(port), env=cli_env(data_dir, **extra),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        if not await wait_until_ready(http, base):
            process.kill()
            raise AssertionError("gateway did not become ready")
        running = Running(process, base)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.returncode is None:
            running.process.kill()
            await running.process.wait()


async def test_restart_keeps_the_conversation_and_cli_sees_it(
    tmp_path: Path, run_gateway: Any, http: aiohttp.ClientSession
) -> None:
    first = await run_gateway(tmp_path)
    chat = await connect(http, first.base)
    await chat.say(SECRET_WORDS)
    await chat.say("how do I start a return")
    before = [m["text"] for m in (await connect(http, first.base, token=chat.token)).session["history"]]

    # The CLI reaches the running gateway's embedded Redis with no setup.
    listed = await asyncio.to_thread(cli, tmp_path, "conversations")
    assert listed.returncode == 0 and chat.conversation_id in listed.stdout

    logs = await first.stop()
    assert first.process.returncode == 0
    assert not (tmp_path / "redis.json").exists()  # the embedded Redis stopped with the gateway
    assert SECRET_WORDS not in logs and "message.accepted" in logs  # bodies never logged at INFO
    for line in logs.strip().splitlines()[1:]:
        assert "request_id" in json.loads(line) or "live_feed" in line

    second = await run_gateway(tmp_path)
    resumed = await connect(http, second.base, token=chat.token)
    assert [m["text"] for m in resumed.session["history"]] == before
    assert (await resumed.say("thanks"))["sender"] == "bot"
    await second.stop()

    # With no gateway running, the CLI starts the embedded Redis itself and reads the same data.
    shown = await asyncio.to_thread(cli, tmp_path, "conversations", chat.conversation_id)
    assert shown.returncode == 0 and "how do I start a return" in shown.stdout


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"BOT": "gpt"}, "BOT"),
        ({"BOT": "http"}, "BOT_HTTP_URL"),
        ({"MAX_MESSAGE_CHARS": "0"}, "MAX_MESSAGE_CHARS"),
        ({"RULES_DIR": "/nonexistent/rules"}, "RULES_DIR"),
        ({"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN"),
    ],
)
def test_bad_setting_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    result = cli(tmp_path, "run", **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "configuration error" in lines[0]


def test_unknown_conversation_is_a_clear_error(tmp_path: Path) -> None:
    result = cli(tmp_path, "conversations", "f" * 32)
    assert result.returncode == 1 and "no conversation" in result.stderr


def test_broken_rules_stop_start_up_with_the_line_to_fix(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(DEMO_RULES, rules)
    (rules / "routing.yaml").write_text((rules / "routing.yaml").read_text().replace(
        "    queue: accounts", "    queue: acounts"))
    result = cli(tmp_path, "run", RULES_DIR=str(rules))
    assert result.returncode == 2
    assert "the rules in" in result.stderr and "no queue named 'acounts'" in result.stderr
    assert "routing.yaml:" in result.stderr


async def test_sighup_reloads_the_rules_and_a_broken_set_is_refused(
    tmp_path: Path, run_gateway: Any, http: aiohttp.ClientSession
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(DEMO_RULES, rules)
    token = "sighup-test-admin-token"
    running = await run_gateway(tmp_path, RULES_DIR=str(rules), ADMIN_TOKEN=token)
    auth = {"Authorization": f"Bearer {token}"}

    async def version() -> str:
        async with http.get(f"{running.base}/api/admin/rules", headers=auth) as response:
            return str((await response.json())["version"])

    async def after_hangup(previous: str) -> str:
        running.process.send_signal(signal.SIGHUP)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if (current := await version()) != previous:
                return current
        return previous

    first = await version()
    ruleset = rules / "ruleset.yaml"
    ruleset.write_text(ruleset.read_text().replace('"2026-11-30.1"', '"2026-11-30.9"'))
    second = await after_hangup(first)
    assert second.startswith("2026-11-30.9+")

    (rules / "triggers.yaml").write_text("low_confidence: {below: 7}\n")
    running.process.send_signal(signal.SIGHUP)
    await asyncio.sleep(1.0)
    assert await version() == second  # refused; the running set stays
    logs = await running.stop()
    assert "rules.reload_refused" in logs and "low_confidence.below" in logs


async def test_the_terminal_simulator_texts_the_gateway_and_shows_every_answer(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """`make run` (demo Twilio settings) and `simulate sms` in another terminal, as the README says."""
    port, api_port = free_port(), free_port()
    env = cli_env(tmp_path, DEMO_TWILIO="1", PORT=str(port), TWILIO_API_BASE_URL=f"http://127.0.0.1:{api_port}")
    gateway = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", env=env,
                                                   stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    simulator = None
    try:
        base = f"http://127.0.0.1:{port}"
        assert await wait_until_ready(http, base)
        simulator = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "simulate", "sms", "--from", "+15551234567", "--url", base,
            "--api-port", str(api_port), env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert simulator.stdin is not None and simulator.stdout is not None

        async def said(marker: str) -> str:
            async with asyncio.timeout(10):
                while True:
                    line = (await simulator.stdout.readline()).decode()
                    if marker in line:
                        return line

        await said("Type a message")
        simulator.stdin.write(b"where is my order #12345\n")
        assert "Account > Orders" in await said("gateway:")
        simulator.stdin.write(b"I want to dispute a charge on my card\n")
        # Worded for texting; by the real clock and who is online: live (the SMS team's hours), a message
        # for the team, nobody available now, or after hours. Each names the team it went to.
        handoff = await said("gateway:")
        assert "Billing" in handoff and "passed" in handoff

        # An agent answers through Twilio's REST API: the simulator's stand-in catches it.
        added = await asyncio.to_thread(cli, tmp_path, "agents", "add", "Alex", "--skills", "billing")
        token = added.stdout.strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(f"{base}/api/agents/me/presence", json={"status": "online", "capacity": 1},
                             headers=headers) as response:
            assert response.status == 200
        async with http.get(f"{base}/api/conversations?state=queued", headers=headers) as response:
            waiting = (await response.json())["conversations"]
        for state in ("offered", "async"):
            async with http.get(f"{base}/api/conversations?state={state}", headers=headers) as response:
                waiting += (await response.json())["conversations"]
        cid = waiting[0]["id"]
        async with http.post(f"{base}/api/conversations/{cid}/claim", headers=headers) as response:
            assert response.status == 200
        async with http.post(f"{base}/api/conversations/{cid}/messages", json={"text": "Hi, Alex here."},
                             headers=headers) as response:
            assert response.status == 201
        # During the team's hours a queue update may be texted first (its wording depends on who is online).
        assert "Alex from our team has joined" in await said("Alex from our team")
        assert "Hi, Alex here." in await said("gateway (REST):")
        simulator.stdin.close()
        assert await asyncio.wait_for(simulator.wait(), 10) == 0
    finally:
        for process in (simulator, gateway):
            if process is not None and process.returncode is None:
                process.terminate()
                await process.wait()
    stderr = (await gateway.stderr.read()).decode() if gateway.stderr else ""
    assert "simulate sms --from" in stderr  # `make run` says how to use it


def test_demo_twilio_never_applies_to_a_real_public_address(tmp_path: Path) -> None:
    """DEMO_TWILIO=1 left in a deployment's environment must not sign with the published demo token."""
    code = ("from gateway.settings import load_settings; s = load_settings(); "
            "print(s.twilio_auth_token is None, s.public_url)")
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(tmp_path, DEMO_TWILIO="1",
                            PUBLIC_URL="https://chat.example.com"), capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0 and result.stdout.startswith("True https://chat.example.com"), result.stderr
