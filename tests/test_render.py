"""kemi/render.py: the Kamailio configuration is filled in from settings, never edited by hand."""

from __future__ import annotations

import pytest

from kemi.render import Tls, metrics_address, ndb_redis_server, render


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/15", "name=tollgate;addr=127.0.0.1;port=6379;db=15"),
    ("redis://redis.example", "name=tollgate;addr=redis.example;port=6379;db=0"),
    ("redis://:s%40cret@10.0.0.5:6380/2", "name=tollgate;addr=10.0.0.5;port=6380;db=2;pass=s@cret"),
    ("unix:///run/redis/redis.sock?db=3", "name=tollgate;unix=/run/redis/redis.sock;db=3"),
])
def test_the_redis_url_becomes_ndb_redis_server_parameter(url, expected):
    assert ndb_redis_server(url) == expected


@pytest.mark.parametrize("url", ["rediss://127.0.0.1:6379/0", "redis://127.0.0.1/x", "redis://:a;b@127.0.0.1/0"])
def test_a_redis_url_ndb_redis_cannot_use_is_refused_with_the_reason(url):
    with pytest.raises(ValueError, match="redis URL"):
        ndb_redis_server(url)


def test_the_rendered_cfg_names_the_server_the_script_uses(tmp_path):
    cfg = render(listen="udp:127.0.0.1:5060", rundir=str(tmp_path), redis_url="redis://127.0.0.1:6379/4",
                 namespace="tg", image_dir=str(tmp_path / "images"))
    assert 'modparam("ndb_redis", "server", "name=tollgate;addr=127.0.0.1;port=6379;db=4")' in cfg
    assert "{{" not in cfg


@pytest.mark.parametrize("mode", ["relay", "redirect"])
@pytest.mark.parametrize("variant", ["plain", "tls", "no-topology-hiding", "udp-only", "capacity"])
def test_every_variant_of_the_cfg_is_one_kamailio_accepts(tmp_path, mode, variant):
    """`kamailio -c` parses the rendered cfg with every module it loads (the #!ifdef branches included)."""
    import subprocess

    from tests.kamailio_harness import KAMAILIO, self_signed_certificate

    options = {"tls": {"tls": Tls(5061, *self_signed_certificate())}, "no-topology-hiding": {"topology_hiding": False},
               "udp-only": {"tcp": False}, "capacity": {"max_cps": 100, "source_max_cps": 10}}.get(variant, {})
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(render(listen="udp:127.0.0.1:5060", rundir=str(tmp_path), redis_url="redis://127.0.0.1:6379/4",
                          namespace="tg", image_dir=str(tmp_path / "images"), mode=mode, **options))
    checked = subprocess.run([KAMAILIO, "-f", str(cfg), "-c"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert ("topoh.so" in cfg.read_text().split("#!ifdef WITH_TOPOH", 1)[1]) and (
        ("#!define WITH_TOPOH" in cfg.read_text()) == (variant != "no-topology-hiding" and mode == "relay"))


def test_a_node_without_metrics_loads_no_http_module_and_one_with_them_listens_where_told():
    plain = render(listen="udp:127.0.0.1:5060", rundir="/run/x", redis_url="redis://127.0.0.1:6379/0",
                   namespace="tg", image_dir="/run/x/images")
    metered = render(listen="udp:127.0.0.1:5060", rundir="/run/x", redis_url="redis://127.0.0.1:6379/0",
                     namespace="tg", image_dir="/run/x/images", metrics_listen="127.0.0.1:9465")
    assert "#!define WITH_METRICS" not in plain and '#!define TOLLGATE_METRICS "off"' in plain
    assert "#!define WITH_METRICS" in metered and '#!define TOLLGATE_METRICS "on"' in metered
    assert "listen=tcp:127.0.0.1:9465" in metered and "$Rp != 9465" in metered
    assert metrics_address("") is None and metrics_address("0.0.0.0:9465") == ("0.0.0.0", 9465)
    for wrong in ("9465", "127.0.0.1:", "127.0.0.1:99999", 'a"b:1'):
        with pytest.raises(ValueError):
            metrics_address(wrong)


def test_a_cluster_url_puts_ndb_redis_in_cluster_mode_with_every_node_named_as_moved_names_it():
    text = render(listen="udp:127.0.0.1:5060", rundir="/tmp", redis_url="redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001",
                  namespace="tg", image_dir="/tmp")
    assert 'modparam("ndb_redis", "server", "name=tollgate;addr=10.0.0.1;port=7000;pass=pw")' in text
    assert 'modparam("ndb_redis", "cluster", 1)' in text
    assert 'modparam("ndb_redis", "server", "name=10.0.0.2:7001;addr=10.0.0.2;port=7001;pass=pw")' in text
    assert '#!define TOLLGATE_REDIS_URL "redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001"' in text


def test_a_single_redis_leaves_ndb_redis_out_of_cluster_mode():
    text = render(listen="udp:127.0.0.1:5060", rundir="/tmp", redis_url="redis://127.0.0.1:6379/0", namespace="tg",
                  image_dir="/tmp")
    assert '"cluster"' not in text and "allow_dynamic_nodes" not in text
