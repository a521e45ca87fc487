"""An agent beside each backend replica (issue 15): a real TorchServe and the TF Serving-compatible
server, each with its own replica-local model directory and its own `gateway agent` process,
artifacts in a real S3-compatible server (moto, its own process), the registry on PostgreSQL.

The tests run in order on one set of processes: what a test leaves is where the next starts.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sqlalchemy import make_url

from tests.e2e.agent_stack import DEADLINE, S3_BUCKET, Replicas, sample, status_of
from tests.e2e.conftest import STORE, _ensure_models
from tests.pgfixtures import create_database, drop_database
from tests.registry.tcpproxy import TcpProxy
from tests.s3fixtures import moto_endpoint  # noqa: F401  (fixture)
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, moto_endpoint):  # noqa: F811
    _ensure_models()
    assert httpx.put(f"{moto_endpoint}/{S3_BUCKET}").status_code == 200
    url = create_database()  # its own: the session's database is other tests' gateway registry
    parsed = make_url(url)
    proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    through_proxy = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    r = Replicas(tmp_path_factory.mktemp("agents"), url, moto_endpoint, agent_registry_url=through_proxy)
    r.proxy = proxy
    try:
        r.start()
        yield r
    finally:
        r.stop()
        proxy.close()
        drop_database(url)


def test_a_desired_version_becomes_ready_on_its_replica_and_answers(replicas):
    replicas.put("mlp", 1, STORE / "mlp" / "1")
    replicas.put("mlp", 2, STORE / "mlp" / "2")
    replicas.desire("mlp", 1, "torchserve")
    replicas.desire("mlp", 2, "tfserving")

    assert replicas.wait_state("ts-0", "mlp", 1, "ready") == ("ready", "")
    assert replicas.wait_state("tf-0", "mlp", 2, "ready") == ("ready", "")
    body, expected = sample("mlp", 1)
    np.testing.assert_allclose(replicas.torchserve_predict("mlp", 1, body), expected, atol=1e-5)
    body, expected = sample("mlp", 2)
    np.testing.assert_allclose(replicas.tfserving_predict("mlp", 2, body), expected, atol=1e-5)
    # Pulled into each replica's own directory, from the bucket (the S3 store's layout, not the store).
    assert (replicas.dirs["torchserve"] / "mlp" / "1" / "mlp.mar").is_file()
    assert (replicas.dirs["tfserving"] / "mlp" / "2" / "saved_model.pb").is_file()
    assert not (replicas.dirs["torchserve"] / "mlp" / "2").exists()
    hosts = {r.replica_id: (r.stack, r.address) for r in replicas.registry.replicas()}
    assert hosts == {
        "ts-0": ("torchserve", replicas.ts.torchserve_url),
        "tf-0": ("tfserving", replicas.tf.tfserving_target),
    }


def test_a_second_version_loads_beside_the_first_and_a_removed_one_is_unloaded(replicas):
    replicas.put("mlp", 3, STORE / "mlp" / "3")
    replicas.desire("mlp", 3, "torchserve")
    replicas.wait_state("ts-0", "mlp", 3, "ready")
    body, expected = sample("mlp", 3)
    np.testing.assert_allclose(replicas.torchserve_predict("mlp", 3, body), expected, atol=1e-5)

    replicas.desire("mlp", 3, "torchserve", state="retired")
    replicas.wait_state("ts-0", "mlp", 3, None)
    wait_until(lambda: httpx.get(f"{replicas.ts.torchserve_management_url}/models/mlp/3").status_code == 404,
               "mlp v3 unregistered from TorchServe", 30, 0.25)  # fmt: skip
    assert not (replicas.dirs["torchserve"] / "mlp" / "3").exists()
    body, expected = sample("mlp", 1)  # the other version is untouched
    np.testing.assert_allclose(replicas.torchserve_predict("mlp", 1, body), expected, atol=1e-5)


@pytest.mark.parametrize("stack", ["torchserve", "tfserving"])
def test_a_restarted_backend_is_converged_again_by_its_agent(replicas, stack):
    if stack == "torchserve":
        replicas.ts.restart_torchserve()
        rid, version, predict = "ts-0", 1, replicas.torchserve_predict
        status = f"{replicas.ts.torchserve_management_url}/models/mlp/1"
    else:
        replicas.tf.restart_tfserving()
        rid, version, predict = "tf-0", 2, replicas.tfserving_predict
        status = f"{replicas.tf.tfserving_rest_url}/v1/models/mlp/versions/2"
    # It came back empty (no start-up file lists the version); the agent loads it again.
    body, expected = sample("mlp", version)

    def answers() -> bool:
        return status_of(status) == 200 and httpx.post(
            f"{replicas.ts.torchserve_url}/predictions/mlp/1" if stack == "torchserve"
            else f"{replicas.tf.tfserving_rest_url}/v1/models/mlp/versions/2:predict", json=body, timeout=30,
        ).status_code == 200  # fmt: skip

    wait_until(answers, f"{stack} serving mlp v{version} again", DEADLINE, 0.5)
    np.testing.assert_allclose(predict("mlp", version, body), expected, atol=1e-5)
    assert replicas.wait_state(rid, "mlp", version, "ready") == ("ready", "")


def test_a_broken_artifact_is_reported_failed_and_nothing_else_changes(replicas, tmp_path):
    broken = tmp_path / "9"
    broken.mkdir()
    (broken / "mlp.mar").write_bytes(b"this is not a zip archive")
    for name in ("signature.json", "sample_input.json", "sample_output.json"):
        (broken / name).write_bytes((STORE / "mlp" / "1" / name).read_bytes())
    replicas.put("mlp", 9, broken)
    replicas.desire("mlp", 9, "torchserve")

    _state, error = replicas.wait_state("ts-0", "mlp", 9, "failed")
    assert "torchserve register mlp v9" in error, error
    assert httpx.get(f"{replicas.ts.torchserve_management_url}/models/mlp/9").status_code == 404
    assert replicas.states("ts-0")[("mlp", 1)] == ("ready", "")
    assert replicas.states("tf-0") == {("mlp", 2): ("ready", "")}
    body, expected = sample("mlp", 1)
    np.testing.assert_allclose(replicas.torchserve_predict("mlp", 1, body), expected, atol=1e-5)
    body, expected = sample("mlp", 2)
    np.testing.assert_allclose(replicas.tfserving_predict("mlp", 2, body), expected, atol=1e-5)


def test_a_registry_outage_leaves_the_replicas_serving_and_converging_on_what_they_knew(replicas):
    replicas.proxy.cut()  # the agents cannot reach the registry any more (the test still can)
    try:
        replicas.ts.restart_torchserve()  # and TorchServe restarts meanwhile, empty
        body, expected = sample("mlp", 1)

        def answers() -> bool:
            url = f"{replicas.ts.torchserve_url}/predictions/mlp/1"
            return status_of(f"{replicas.ts.torchserve_management_url}/models/mlp/1") == 200 and (
                httpx.post(url, json=body, timeout=30).status_code == 200
            )

        wait_until(answers, "TorchServe serving mlp v1 again during the outage", DEADLINE, 0.5)
        np.testing.assert_allclose(replicas.torchserve_predict("mlp", 1, body), expected, atol=1e-5)
        body, expected = sample("mlp", 2)
        np.testing.assert_allclose(replicas.tfserving_predict("mlp", 2, body), expected, atol=1e-5)
        assert "serving what this replica holds" in replicas.agents["torchserve"].log_path.read_text()
    finally:
        replicas.proxy.restore()
    replicas.desire("mlp", 3, "torchserve")  # and once it is back, changes reach the agents again
    assert replicas.wait_state("ts-0", "mlp", 3, "ready") == ("ready", "")
