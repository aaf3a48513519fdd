"""RQ entry points. Each takes only ids, so a queued job never carries stale model data."""
from aip.services.jobs import job_run


def run_job(job_id: int) -> str:
    """Run the packager job ``job_id`` and return its final state; the ``Job`` row records the outcome."""
    return job_run(job_id).state


def backup_schedules_tick() -> list[int]:
    """Start a backup job for every due schedule and return the new job ids; rq-scheduler runs this each minute."""
    from aip.services.schedules import schedules_tick

    return [job.pk for job in schedules_tick()]


def fixity_check(share: str = "1/7") -> int:
    """Check the next share of stored backup packages and bitstream files; return how many problems it found."""
    from aip.services.fixity import fixity_task

    return fixity_task(share)


def finish_split_job(job_id: int) -> str:
    """End split job ``job_id`` once its part jobs have ended, and return its final state."""
    from aip.services.split import split_finish

    return split_finish(job_id).state
