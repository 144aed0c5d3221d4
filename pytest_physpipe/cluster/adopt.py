"""Finding the job already computing a stage instance, so that nothing is computed twice.

A key's ``submitted.json`` names the job of the last submission: while the scheduler has it
pending or running, a campaign (an xdist sibling, a second session) waits for that job instead
of submitting another. A ``submitting.json`` marker without a ``submitted.json`` is a
submission cut short (Ctrl-C, ``kill -9``) before ``sbatch`` returned: the job may exist all
the same, and is found by its tag (the name carries key and run, :mod:`.jobs`) and adopted.
An array task's marker also records its task index (and how many instances its task packs).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_physpipe.cluster.arrays import split_task_id, task_id
from pytest_physpipe.cluster.jobs import find_tagged
from pytest_physpipe.cluster.outcome import read_json
from pytest_physpipe.plan import StageInstance
from pytest_physpipe.store.atomic import write_text_atomic

if TYPE_CHECKING:
    from pytest_physpipe.cluster.campaign import Campaign

__all__ = ["reuse"]


def reuse(campaign: Campaign, instance: StageInstance, folder: Path) -> str | None:
    """The id of a job already computing ``instance`` that this session may wait for."""
    previous = read_json(folder / "submitted.json")
    rebuild = campaign.runner.wants_rebuild(instance)
    if previous and previous.get("backend") == campaign.backend.name:
        job_id = str(previous["job_id"])
        # Under --physpipe-rebuild only a job of this very run (an xdist sibling's) counts.
        if not rebuild or previous.get("run_id") == campaign.run_id:
            info = campaign.backend.status(job_ids=[job_id]).get(job_id)
            if info is not None and not info.state.finished:
                campaign.say(f"physpipe: {instance.label} is already in flight as job {job_id}")
                campaign.submitted_at[instance.key] = float(
                    previous.get("submitted_at", time.time())
                )
                if previous.get("run_id") != campaign.run_id:
                    campaign.adopted.add(instance.key)
                return job_id
    marker = read_json(folder / "submitting.json")
    if marker is None or marker.get("backend") != campaign.backend.name:
        return None
    # A submission was cut short (Ctrl-C, kill -9) before its job id was recorded: the
    # job may exist all the same. Find it by its tag and adopt it.
    if rebuild and marker.get("run_id") != campaign.run_id:
        return None
    for info in find_tagged(campaign.backend) or []:
        if info.name != marker.get("name"):  # the name carries the key and the run
            continue
        job_id = info.job_id
        if "index" in marker:  # one task of a job array
            job_id = task_id(campaign.backend, split_task_id(job_id)[0], int(marker["index"]))
        record = {
            **marker,
            "job_id": job_id,
            "submitted_at": marker.get("at"),
            "depends_on": [],
            "adopted_by": campaign.run_id,
        }
        write_text_atomic(folder / "submitted.json", json.dumps(record, indent=1))
        (folder / "submitting.json").unlink(missing_ok=True)
        campaign.say(
            f"physpipe: adopted {instance.label}: job {job_id} of an interrupted run is in flight"
        )
        campaign.submitted_at[instance.key] = float(marker.get("at") or time.time())
        if marker.get("run_id") != campaign.run_id:
            campaign.adopted.add(instance.key)
        return job_id
    return None
