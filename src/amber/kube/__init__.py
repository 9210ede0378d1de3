"""The RecurringJob operator: Amber's recurring jobs, driven by Kubernetes objects.

A `RecurringJob` (group `amber.csi.dev`, namespaced; deploy/base/crd-recurringjob.yaml) is a job
of `amber.jobs` written as a custom resource: the same spec fields, plus the PVC selection in
Kubernetes terms and the VolumeSnapshotClass. The operator is an edge, like the CSI servicers:
it keeps a cache of the RecurringJobs (list + watch), turns each into a `JobSpec`, and lets the
`amber.jobs.Scheduler` run them with an executor whose volumes are PVCs and whose snapshots are
VolumeSnapshot objects, so every scheduled snapshot is visible and restorable with the standard
API. Per-volume tasks run in `amber node` on the node that holds the volume; target tasks
(prune, check) once per cluster in `amber controller`. Results go to the RecurringJob's status
(each node writes only its own key, `status.nodes.<node>`) and to events on the PVC and the job.
"""
