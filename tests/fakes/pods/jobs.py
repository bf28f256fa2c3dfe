"""The Job controller, the TTL-after-finished controller, and Jobs made from a CronJob.

https://kubernetes.io/docs/concepts/workloads/controllers/job/ :

- A Job keeps ``parallelism`` (1) pods running until ``completions`` (1) of them succeeded; pods are
  ``<job>-<suffix>`` with the labels ``batch.kubernetes.io/job-name`` / ``job-name`` and
  ``batch.kubernetes.io/controller-uid`` / ``controller-uid``.
- Failures: each failed pod (restartPolicy Never), or each container restart (OnFailure), counts;
  more than ``backoffLimit`` (6) fails the Job (``BackoffLimitExceeded``); a failed pod is replaced
  after the controller's back-off (10 s, doubling, at most 6 minutes; scaled). ``activeDeadlineSeconds``
  fails it too (``DeadlineExceeded``). Either way the Job's running pods are deleted.
- Status: startTime, active, ready, succeeded, failed, terminating, completionTime, and the
  conditions SuccessCriteriaMet and Complete, or FailureTarget and Failed. ``suspend`` deletes the active
  pods and creates none. ``ttlSecondsAfterFinished`` deletes a finished Job (and, through the garbage
  collector, its pods) once that many seconds passed (scaled).

https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ : :func:`job_from_cronjob` is
``kubectl create job NAME --from=cronjob/CRONJOB`` (the job template's labels, annotations and spec,
annotation ``cronjob.kubernetes.io/instantiate: manual``, the CronJob as controller owner); finished Jobs
a CronJob owns beyond ``successfulJobsHistoryLimit`` (3) and ``failedJobsHistoryLimit`` (1) are deleted.
The schedule itself is not run by the clock: tests create the Job when they want it.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.pods.api import CRONJOBS, JOBS, PODS, Body, meta
from tests.fakes.pods.cluster import Cluster
from tests.fakes.pods.deployments import controller_ref, owned_by, pod_from_template, write_status
from tests.fakes.pods.pod_status import is_active, is_ready, now
from tests.fakes.pods.podspec import generated_suffix

JOB_BACKOFF, JOB_BACKOFF_MAX = 10.0, 360.0


def _time(stamp: Any) -> datetime.datetime | None:
    if not stamp:
        return None
    return datetime.datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _since(stamp: Any) -> float:
    then = _time(stamp)
    return 0.0 if then is None else (datetime.datetime.now(datetime.UTC) - then).total_seconds()


def finished(job: Mapping[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` once the Job has one of those conditions True."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def _conditions(kinds: list[tuple[str, str, str]]) -> list[Body]:
    stamp = now()
    return [
        {
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastProbeTime": stamp,
            "lastTransitionTime": stamp,
        }
        for kind, reason, message in kinds
    ]


@dataclass
class JobPlan:
    create: int = 0
    delete: list[str] = field(default_factory=list)
    status: Body = field(default_factory=dict)


def _last_failure(pods: list[Body]) -> str:
    ends = []
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated.get("finishedAt"):
                ends.append(str(terminated["finishedAt"]))
    return max(ends, default="")


def plan_job(job: Mapping[str, Any], pods: list[Body], scale: float) -> JobPlan:
    """One pass of the Job controller, as a pure function of the Job and its pods."""
    spec, status_now = job.get("spec") or {}, job.get("status") or {}
    plan = JobPlan()
    active = [p for p in pods if is_active(p)]
    succeeded = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    restarts = sum(
        int(c.get("restartCount") or 0) for p in active for c in (p.get("status") or {}).get("containerStatuses") or []
    )
    status: Body = {
        "startTime": status_now.get("startTime") or now(),
        "active": len(active),
        "ready": sum(is_ready(p) for p in active),
        "succeeded": len(succeeded),
        "failed": len(failed),
        "terminating": sum(bool(meta(p).get("deletionTimestamp")) for p in pods),
    }
    if status_now.get("conditions"):
        status["conditions"] = status_now["conditions"]
    if status_now.get("completionTime"):
        status["completionTime"] = status_now["completionTime"]
    plan.status = status
    if finished(job):
        plan.delete = [str(meta(p)["name"]) for p in active]
        return plan
    parallelism = int(spec.get("parallelism", 1))
    completions = int(spec.get("completions") or 1)
    deadline = spec.get("activeDeadlineSeconds")
    if len(succeeded) >= completions:
        status["conditions"] = _conditions(
            [("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
             ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")]
        )  # fmt: skip
        status["completionTime"] = now()
        plan.delete = [str(meta(p)["name"]) for p in active]
        return plan
    failure = None
    if len(failed) + restarts > int(spec.get("backoffLimit", 6)):
        failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    elif deadline is not None and _since(status["startTime"]) > float(deadline) * scale:
        failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
    if failure is not None:
        status["conditions"] = _conditions([("FailureTarget", *failure), ("Failed", *failure)])
        plan.delete = [str(meta(p)["name"]) for p in active]
        return plan
    if spec.get("suspend"):
        plan.delete = [str(meta(p)["name"]) for p in active]
        return plan
    if failed:
        delay = min(JOB_BACKOFF * 2 ** (len(failed) - 1), JOB_BACKOFF_MAX) * scale
        if _since(_last_failure(failed)) < delay:
            return plan
    plan.create = max(0, min(parallelism, completions - len(succeeded)) - len(active))
    return plan


def job_pod(job: Mapping[str, Any]) -> Body:
    template = (job.get("spec") or {}).get("template") or {}
    pod = pod_from_template(job, template)
    info = meta(job)
    pod["metadata"]["labels"].update(
        {
            "batch.kubernetes.io/controller-uid": info.get("uid"),
            "batch.kubernetes.io/job-name": info.get("name"),
            "controller-uid": info.get("uid"),
            "job-name": info.get("name"),
        }
    )
    return pod


def job_from_cronjob(cronjob: Mapping[str, Any], name: str | None = None) -> Body:
    """``kubectl create job NAME --from=cronjob/CRONJOB``."""
    info = meta(cronjob)
    template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
    template_meta = template.get("metadata") or {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name or f"{info.get('name')}-manual-{generated_suffix(str(info.get('uid')))}",
            "namespace": info.get("namespace"),
            "labels": dict(template_meta.get("labels") or {}),
            "annotations": {**(template_meta.get("annotations") or {}), "cronjob.kubernetes.io/instantiate": "manual"},
            "ownerReferences": [controller_ref(cronjob)],
        },
        "spec": dict(template.get("spec") or {}),
    }


class JobController:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def sync(self) -> None:
        c, api = self.cluster, self.cluster.api
        for job in list(c.cache(JOBS).items()):
            info = meta(job)
            namespace = str(info.get("namespace"))
            if not c.managed(namespace) or info.get("deletionTimestamp"):
                continue
            pods = [p for p in c.cache(PODS).items(namespace) if owned_by(p, job)]
            plan = plan_job(job, pods, c.scale)
            for _ in range(plan.create):
                await c.write(PODS, api.create(PODS.path(namespace), job_pod(job)))
            for pod_name in plan.delete:
                await c.delete(PODS, PODS.path(namespace, pod_name))
            await write_status(c, JOBS, job, plan.status)
            ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
            done_at = plan.status.get("completionTime") or _failed_at(plan.status)
            if ttl is not None and finished({"status": plan.status}) and _since(done_at) >= float(ttl) * c.scale:
                await c.delete(JOBS, JOBS.path(namespace, str(info["name"])), {"propagationPolicy": "Background"})
        for cronjob in list(c.cache(CRONJOBS).items()):
            await self._history(cronjob)

    async def _history(self, cronjob: Mapping[str, Any]) -> None:
        c, spec = self.cluster, cronjob.get("spec") or {}
        namespace = str(meta(cronjob).get("namespace"))
        if not c.managed(namespace):
            return
        jobs = [
            j for j in c.cache(JOBS).items(namespace) if owned_by(j, cronjob) and not meta(j).get("deletionTimestamp")
        ]
        for kind, limit in (
            ("Complete", spec.get("successfulJobsHistoryLimit", 3)),
            ("Failed", spec.get("failedJobsHistoryLimit", 1)),
        ):
            done = sorted((j for j in jobs if finished(j) == kind), key=lambda j: str(meta(j).get("creationTimestamp")))
            for old in done[: max(0, len(done) - int(limit))]:
                await c.delete(JOBS, JOBS.path(namespace, str(meta(old)["name"])), {"propagationPolicy": "Background"})


def _failed_at(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Failed":
            return str(condition.get("lastTransitionTime"))
    return None
