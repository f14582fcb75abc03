"""Start a data-parallel training stage on this machine without torchrun (tests, benchmarks).

:func:`spawn_local` starts ``W`` processes ``python -m drive_segment_training.ddp_launch JOB.json``
with the variables torchrun would set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); each runs :class:`~drive_segment_training.trainer.Trainer` (gloo on the CPU) and
writes its loss history and weight checksums to ``rank<r>.json``. On GPU machines use
``torchrun`` with the ``drive-segment`` command instead (README, "Scaling out").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.distributed import free_port, state_checksum
from drive_segment_training.train_config import TrainConfig
from drive_segment_training.trainer import Trainer

__all__ = ["spawn_local"]


def _worker_main(job_path: str) -> int:
    """Entry of one process started by :func:`spawn_local` (torchrun's variables are in the environment)."""
    job = json.loads(Path(job_path).read_text())
    torch.set_num_threads(int(job.get("threads", 1)))
    cfg = TrainConfig.from_dict(job["config"])
    trainer = Trainer(cfg, job["stage"], Path(job["teacher"]) if job.get("teacher") else None)
    try:
        trainer.run(stop_at=job.get("stop_at"))
        rank = trainer.dist.rank
        result = {"rank": rank, "world_size": trainer.dist.world_size, "loss": trainer.history["loss"],
                  "seconds": trainer.history["seconds"], "iteration": trainer.iteration,
                  "model_checksum": state_checksum(trainer.model),
                  "teacher_checksum": state_checksum(trainer.teacher) if trainer.teacher is not None else None}
        Path(job["result_dir"], f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        trainer.close()
    return 0


def spawn_local(world_size: int, stage: str, config: Dict[str, Any], teacher: Optional[str] = None,
                stop_at: Optional[int] = None, result_dir: Optional[str] = None, threads: int = 1,
                timeout_s: float = 600.0) -> Dict[int, dict]:
    """Run one training stage in ``world_size`` local processes, as ``torchrun --standalone`` would.

    For tests and benchmarks on one machine (gloo on the CPU); on GPUs use ``torchrun``. Each
    process is ``python -m drive_segment_training.ddp_launch JOB.json`` with ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` set, and runs
    ``Trainer(cfg, stage, teacher).run(stop_at)``.

    Args:
        world_size: number of processes. stage: ``"teacher"`` / ``"student"``.
        config: ``TrainConfig.to_dict()`` (``device`` should be ``"cpu"`` unless there is a GPU per rank).
        teacher: the student's teacher checkpoint. stop_at: stop at this iteration.
        result_dir: where each rank writes ``rank<r>.json`` and ``rank<r>.log`` (default
            ``config["out_dir"]/dist_results``).
        threads: torch intra-op threads per process. timeout_s: for the whole run.

    Returns:
        ``{rank: {"loss": [...], "seconds": [...], "iteration", "model_checksum", "teacher_checksum"}}``.

    Raises:
        DriveSegmentError: a process failed or timed out (with the last line of its log).
    """
    result_dir = Path(result_dir or Path(config["out_dir"]) / "dist_results")
    result_dir.mkdir(parents=True, exist_ok=True)
    for old in result_dir.glob("rank*.json"):
        old.unlink()
    job = {"stage": stage, "config": dict(config), "teacher": str(teacher) if teacher else None,
           "stop_at": stop_at, "threads": int(threads), "result_dir": str(result_dir)}
    job_path = result_dir / "job.json"
    job_path.write_text(json.dumps(job, default=str))
    port = free_port()
    procs, logs = [], []
    for rank in range(world_size):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                   RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size),
                   OMP_NUM_THREADS=str(threads))
        log = open(result_dir / f"rank{rank}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, "-m", "drive_segment_training.ddp_launch", str(job_path)],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout_s
    failed = None
    try:
        while any(p.poll() is None for p in procs):
            if failed is None:
                failed = next((r for r, p in enumerate(procs) if p.poll() not in (None, 0)), None)
            if failed is not None or time.monotonic() > deadline:
                for p in procs:  # one rank died (the others would wait forever) or timeout
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.05)
    finally:
        for log in logs:
            log.close()
    codes = [p.wait() for p in procs]
    if any(codes):
        r = failed if failed is not None else next(r for r, c in enumerate(codes) if c)
        lines = [ln for ln in (result_dir / f"rank{r}.log").read_text(errors="replace").splitlines() if ln.strip()]
        raise DriveSegmentError(f"spawn_local: training process {r} exited with {codes[r]}: "
                                f"{lines[-1] if lines else 'no output'} (log: {result_dir / f'rank{r}.log'})")
    return {r: json.loads((result_dir / f"rank{r}.json").read_text()) for r in range(world_size)}


if __name__ == "__main__":  # pragma: no cover - the processes of spawn_local
    sys.exit(_worker_main(sys.argv[1]))
