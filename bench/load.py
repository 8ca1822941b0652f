"""Several people on one server: `python -m bench.load [--sessions 1 4 8] [--duration 60] [--clicks-per-page 3]`.

One `streamlit run app/main.py` server, warmed by one session that visits every explorer page. Then for each N in
--sessions: N headless Chromium sessions (Playwright, a browser context each) at once, each going round the explorer
pages (Layers, Swap, Compare, Attribution; session i starts at page i mod 4) by the sidebar's page links and clicking
the page's index stepper "+" --clicks-per-page times on each, for --duration seconds. A click counts from the click
until the page's pictures last changed, once the script has stopped and nothing has changed for 500 ms (bench.ui's
measure, in the page's own clock); one not settled within 60 s counts as not done.

Prints JSON, per N: the median and 95th-percentile click-to-settled ms of the stepper clicks (page switches
apart), clicks over 10 s, clicks not done, exceptions the pages showed, and the server's resident memory (MB) once
the N sessions are open, at the end of the clicking and at its peak. To tell where a slow click's time went: the ms
from a click until the browser last saw the script running (`until_script_stopped`), and the CPU seconds the server,
this bench's Chromium and everything else on the machine used while clicking (`cpu_s`; the browsers share the cores
with the server here). Targets at the largest N (8 on a 2-core machine): no exception, no click over 10 s, p95
within 8x the median at N = 1, memory flat (the end within MEMORY_TARGET_MB of the start).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import print_figures
from bench.ui import CHROMIUM, CHROMIUM_ARGS, PAGE_STATE_JS, QUIET_MS, ROOT, VIEWPORT, WATCH_PICTURES_JS, streamlit_process

# (title, URL path, key of its index number_input), in the order a session goes round them
PAGES = (("Layers", "", "layers_index"), ("Swap", "swap", "swap_a_index"), ("Compare", "compare", "compare_index"),
         ("Attribution", "attribution", "attr_index"))
SESSION_ARGS = ("--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows")  # every session drawn as if in a window of its own
CLICK_TIMEOUT_S = 60  # a click not settled by then is "not done"
SLOW_S = 10  # a click over this is "over 10 s"
OPEN_TIMEOUT_S = 300  # N sessions opening at once on a cold page
P95_RATIO_TARGET = 8.0  # p95 at the largest N over the median at N = 1
MEMORY_TARGET_MB = 100.0  # growth of the server's memory over one N's clicking


def resident_mb(pid: int) -> float:
    """The resident memory of process `pid` (Linux /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pids: set[int]) -> float:
    """User and system CPU time the processes `pids` have used (Linux /proc; gone ones count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> set[int]:
    """The processes below `root` (this bench's Chromium, its renderers and the Playwright driver)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between order statistics."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def settle(page, *, after: float, timeout_s: float) -> tuple[float, float] | None:
    """(the page-clock time the pictures last changed, the last time the script was seen running), once a change came
    after `after`, the script has stopped and nothing changed for QUIET_MS; None when that takes over `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    running_seen = after
    while time.monotonic() < deadline:
        state = await page.evaluate(PAGE_STATE_JS)
        if state["running"]:
            running_seen = state["now"]
        elif state["lastChange"] > after and state["now"] - state["lastChange"] >= QUIET_MS:
            return state["lastChange"], running_seen
        await asyncio.sleep(0.05)
    return None


class Session:
    """One person: a browser context on the app, going round the explorer pages from page `first`."""

    def __init__(self, browser, url: str, first: int):
        self.browser, self.url = browser, url
        self.order = [PAGES[(first + i) % len(PAGES)] for i in range(len(PAGES))]
        self.clicks: list[tuple[str, float | None]] = []  # (page, ms or None: not done)
        self.scripts: list[tuple[str, float]] = []  # (page, ms from a click until its script was last seen running)
        self.switches: list[tuple[str, float | None]] = []
        self.exceptions: set[str] = set()

    async def open(self) -> None:
        self.context = await self.browser.new_context(viewport=VIEWPORT)
        self.page = await self.context.new_page()
        await self.page.add_init_script(WATCH_PICTURES_JS)
        title, path, key = self.order[0]
        await self.page.goto(f"{self.url}/{path}", timeout=OPEN_TIMEOUT_S * 1000, wait_until="commit")
        await self.page.locator(f'.st-key-{key} [data-testid="stNumberInputStepUp"]').wait_for(
            timeout=OPEN_TIMEOUT_S * 1000)
        if await settle(self.page, after=0, timeout_s=OPEN_TIMEOUT_S) is None:
            raise TimeoutError(f"{title} did not settle within {OPEN_TIMEOUT_S} s")
        await self.look_for_exceptions(title)

    async def look_for_exceptions(self, title: str) -> None:
        errors = self.page.locator('[data-testid="stException"]')
        for i in range(await errors.count()):
            self.exceptions.add(f"{title}: {(await errors.nth(i).inner_text())[:300]}")

    async def click_step_up(self, title: str, key: str) -> None:
        await self.page.evaluate("window.__bench.clickAt = null")
        await self.page.locator(f'.st-key-{key} [data-testid="stNumberInputStepUp"]').click(
            timeout=CLICK_TIMEOUT_S * 1000)
        clicked = await self.page.evaluate("window.__bench.clickAt")
        settled = await settle(self.page, after=clicked, timeout_s=CLICK_TIMEOUT_S) if clicked is not None else None
        self.clicks.append((title, None if settled is None else settled[0] - clicked))
        if settled is not None:
            self.scripts.append((title, settled[1] - clicked))
        await self.look_for_exceptions(title)

    async def switch_to(self, title: str, key: str) -> None:
        link = self.page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title)
        clicked = await self.page.evaluate("performance.now()")
        await link.click(timeout=CLICK_TIMEOUT_S * 1000)
        settled = await settle(self.page, after=clicked, timeout_s=CLICK_TIMEOUT_S)
        if settled is not None and not await self.page.locator(f'.st-key-{key}').count():
            settled = None  # settled on something else than the new page
        self.switches.append((title, None if settled is None else settled[0] - clicked))
        await self.look_for_exceptions(title)

    async def work(self, deadline: float, clicks_per_page: int) -> None:
        """Round the pages until `deadline`: on each, `clicks_per_page` clicks on its stepper, then the next page."""
        visit = 0
        while time.monotonic() < deadline:
            title, _, key = self.order[visit % len(self.order)]
            if visit:
                await self.switch_to(title, key)
            for _ in range(clicks_per_page):
                if time.monotonic() >= deadline:
                    break
                await self.click_step_up(title, key)
            visit += 1

    async def close(self) -> None:
        await self.context.close()


def summary(samples: list[tuple[str, float | None]]) -> dict:
    done = [ms for _, ms in samples if ms is not None]
    return {"count": len(samples), "median_ms": round(statistics.median(done)) if done else None,
            "p95_ms": round(percentile(done, 95)) if done else None, "max_ms": round(max(done)) if done else None,
            "over_10s": sum(ms is None or ms > SLOW_S * 1000 for _, ms in samples),
            "not_done_in_60s": sum(ms is None for _, ms in samples)}


async def phase(browser, url: str, pid: int, sessions: int, duration_s: float, clicks_per_page: int) -> dict:
    """N sessions clicking at once for `duration_s`; their figures and the server's memory."""
    before = resident_mb(pid)
    people = [Session(browser, url, first=i % len(PAGES)) for i in range(sessions)]
    await asyncio.gather(*(person.open() for person in people))
    start_mb, peak_mb = resident_mb(pid), 0.0

    async def sample_memory():
        nonlocal peak_mb
        while True:
            peak_mb = max(peak_mb, resident_mb(pid))
            await asyncio.sleep(1)

    sampler = asyncio.create_task(sample_memory())
    browser_pids = descendants(os.getpid()) - {pid}
    cpu_before = cpu_seconds({pid}), cpu_seconds(browser_pids), machine_busy_seconds(), time.monotonic()
    deadline = time.monotonic() + duration_s
    await asyncio.gather(*(person.work(deadline, clicks_per_page) for person in people))
    end_mb = resident_mb(pid)
    browser_pids |= descendants(os.getpid()) - {pid}
    cpu_after = cpu_seconds({pid}), cpu_seconds(browser_pids), machine_busy_seconds(), time.monotonic()
    server_cpu, browser_cpu, machine_cpu, wall = (after - before for after, before in zip(cpu_after, cpu_before))
    sampler.cancel()
    await asyncio.gather(*(person.close() for person in people))
    clicks = [c for person in people for c in person.clicks]
    return {"sessions": sessions, "duration_s": duration_s, **summary(clicks),
            "per_page": {title: summary([c for c in clicks if c[0] == title]) for title, _, _ in PAGES},
            "page_switches": summary([s for person in people for s in person.switches]),
            "until_script_stopped": summary([s for person in people for s in person.scripts]),
            "exceptions": sorted({e for person in people for e in person.exceptions}),
            "cpu_s": {"wall": round(wall, 1), "server": round(server_cpu, 1), "browsers": round(browser_cpu, 1),
                      "others": round(machine_cpu - server_cpu - browser_cpu, 1), "cores": os.cpu_count()},
            "memory_mb": {"before_sessions": round(before), "start": round(start_mb), "end": round(end_mb),
                          "peak": round(max(peak_mb, end_mb)), "growth": round(end_mb - start_mb)}}


async def run(args: argparse.Namespace) -> dict:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp, contextlib.ExitStack() as stack:
        log = Path(args.server_log) if args.server_log else Path(tmp) / "app.log"
        url, process = stack.enter_context(streamlit_process(ROOT / "app" / "main.py", log))
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                       args=[*CHROMIUM_ARGS, *SESSION_ARGS])
            warm = Session(browser, url, first=0)  # caches filled, libraries imported: not what is measured
            await warm.open()
            await warm.work(time.monotonic() + 1, clicks_per_page=1)
            for title, _, key in warm.order[1:]:
                await warm.switch_to(title, key)
            await warm.close()
            phases = [await phase(browser, url, process.pid, n, args.duration, args.clicks_per_page)
                      for n in args.sessions]
            await browser.close()
    return report(phases, args)


def report(phases: list[dict], args: argparse.Namespace) -> dict:
    first, last = phases[0], phases[-1]
    base = first["median_ms"] if first["sessions"] == 1 else None
    return {
        "phases": phases, "clicks_per_page": args.clicks_per_page, "viewport": VIEWPORT, "quiet_ms": QUIET_MS,
        "targets": {"sessions": last["sessions"], "no_exception": not last["exceptions"],
                    "no_click_over_10s": last["over_10s"] == 0,
                    "p95_over_single_median": round(last["p95_ms"] / base, 2) if base and last["p95_ms"] else None,
                    "p95_within_8x": bool(base and last["p95_ms"] and last["p95_ms"] <= P95_RATIO_TARGET * base),
                    "memory_flat": last["memory_mb"]["growth"] <= MEMORY_TARGET_MB},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8], help="N: concurrent sessions, per phase")
    parser.add_argument("--duration", type=float, default=60, help="seconds of clicking per N")
    parser.add_argument("--clicks-per-page", type=int, default=3, help="stepper clicks on a page before the next")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--server-log", default=None, help="keep the server's output here (default: discarded)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"bench.load needs Chromium at {CHROMIUM} (Debian package 'chromium')")
    print_figures(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    main()
