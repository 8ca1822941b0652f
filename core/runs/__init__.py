"""Runs as a user drives them: reading a run's metrics while it grows, watching run folders, launching and stopping
training processes, and the command line (`python -m core.train`). Imports the layers below it, never the app.
"""
from __future__ import annotations

from core.runs.metrics import MetricsReader, decimate, curve_metrics, curves
from core.runs.monitor import (
    RUNS_ENV, runs_root, RunSummary, ACTIVE_STATES, summarize, discover_runs, pid_alive, LAUNCH_FILE, LOG_FILE,
    UNREADABLE, load_launch, read_launch, last_log_error, plain, CHILDREN, reap,
)
from core.runs.launcher import (
    Configs, Launched, ARCHITECTURES, make_configs, parse_channels, check_run_name, default_run_name, train_command,
    launch, resume, stop,
)
from core.runs import launcher, metrics, monitor  # the command line (core.runs.cli) is imported where it runs

__all__ = [
    "MetricsReader", "decimate", "curve_metrics", "curves", "RUNS_ENV", "runs_root", "RunSummary", "ACTIVE_STATES",
    "summarize", "discover_runs", "pid_alive", "LAUNCH_FILE", "LOG_FILE", "UNREADABLE", "load_launch",
    "read_launch", "last_log_error", "plain", "CHILDREN", "reap", "Configs", "Launched", "ARCHITECTURES",
    "make_configs", "parse_channels", "check_run_name", "default_run_name", "train_command", "launch", "resume",
    "stop", "launcher", "metrics", "monitor",
]
