from tests.e2e.cluster import Cluster


def test_up(cluster: Cluster) -> None:
    assert cluster.kube.get("csinodes", "node-a")
