"""The report's partition tables as data, LVM's arithmetic and the fit check, against real sfdisk."""

import json
import shutil
import subprocess

import pytest

from provisioner.render import storage
from tests.conftest import REPORT_COMPUTE_DISK, REPORT_CONTROLLER_DISK


@pytest.fixture
def layouts(site):
    return site.layouts


@pytest.mark.parametrize("pv, vg", [(21000, 20996), (216974, 216972), (17000, 16996),
                                    (30000, 29996), (28788, 28784), (5, 4), (4, 0), (1, 0)])
def test_vg_size_is_lvm_arithmetic(pv, vg):
    assert storage.vg_usable_mib(pv) == vg


def test_table1_resolves_to_the_reports_numbers(layouts):
    plan = storage.plan(layouts["compute"])
    assert plan.vg_sizes == {"vg_base": 20996, "vg_gluster": 216972}
    assert [(v.vg, v.name, v.size, v.mount, v.fstype) for v in plan.volumes] == [
        ("vg_base", "lv_root", 10000, "/", "ext4"),
        ("vg_base", "lv_swap", 6000, None, "swap"),
        ("vg_base", "lv_home", 4996, "/home", "ext4"),
        ("vg_gluster", "lv_gluster", 216972, "/export/gluster", "xfs"),
    ]
    assert plan.warnings == []


def test_table1_exactly_fills_the_reports_250gb_disk(layouts):
    layout = layouts["compute"]
    assert storage.required_disk_mib(layout) == REPORT_COMPUTE_DISK // storage.MIB
    storage.check_fit(layout, REPORT_COMPUTE_DISK)
    with pytest.raises(storage.LayoutError, match=r"sda3 \(vg_gluster\).*short by 1 MiB"):
        storage.check_fit(layout, REPORT_COMPUTE_DISK - storage.MIB)


def test_table2_fits_the_80gb_disk_and_its_inconsistency_is_visible(layouts):
    layout = layouts["controller"]
    storage.check_fit(layout, REPORT_CONTROLLER_DISK)
    plan = storage.plan(layout)
    assert plan.vg_sizes == {"nova-volumes": 29996, "vg_base": 16996, "vg_images": 28784}
    images = [v for v in plan.volumes if v.name == "lv_images"][0]
    assert (images.stated_size, images.size) == (28788, 28784)
    assert len(plan.warnings) == 2
    assert "states vg_images at 28788 MiB, but LVM makes 28784 MiB" in plan.warnings[0]
    assert "installing lv_images at 28784 MiB (4 MiB smaller)" in plan.warnings[1]


def test_a_disk_too_small_is_refused_naming_the_volume_and_shortfall(layouts):
    with pytest.raises(storage.LayoutError) as e:
        storage.check_fit(layouts["controller"], 40 * 1000**3)
    msg = str(e.value)
    assert "sda3 (nova-volumes)" in msg and "short by 38147 MiB" in msg


def test_an_overfull_volume_group_is_refused_unless_the_table_allows_shrinking(site):
    data = {
        "disk": "sda",
        "partitions": [{"name": "sda1", "size": 500, "mount": "/boot", "fstype": "ext4"},
                       {"name": "sda2", "size": 1000, "pv": "vg"}],
        "volume_groups": [{"name": "vg", "volumes": [
            {"name": "root", "size": 800, "mount": "/", "fstype": "ext4"},
            {"name": "home", "size": 200, "mount": "/home", "fstype": "ext4"}]}],
    }
    layout = storage.parse_layout("x", data, "layouts.x")
    with pytest.raises(storage.LayoutError, match=r"vg holds 996 MiB .* short by 4 MiB"):
        storage.plan(layout)
    data["volume_groups"][0]["volumes"][1]["shrink_to_fit"] = True
    plan = storage.plan(storage.parse_layout("x", data, "layouts.x"))
    assert [v.size for v in plan.volumes] == [800, 196]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["partitions"][1].update(name="sda3"), r"partitions\[1\]\.name: expected 'sda2'"),
    (lambda d: d["partitions"][0].update(size=0), r"partitions\[0\]\.size: 0 is not a positive"),
    (lambda d: d["partitions"][0].update(fstype="ntfs"), r"partitions\[0\]\.fstype: 'ntfs' is not one of"),
    (lambda d: d["partitions"][0].update(color="red"), r"partitions\[0\]\.color: unknown key"),
    (lambda d: d["partitions"][1].update(pv="vg_nope"), r"sda2 is a PV of 'vg_nope'"),
    (lambda d: d["volume_groups"][0]["volumes"][0].update(mount="relative"), r"not an absolute mount point"),
    (lambda d: d["volume_groups"][0]["volumes"][0].update(mount="/home"), r"mount point /home is used twice"),
    (lambda d: d["partitions"].append({"name": "sda3", "size": 10, "extended": True}),
     r"extended partition holds no logical"),
])
def test_bad_layouts_name_the_bad_key(layouts, mutate, message):
    data = json.loads(json.dumps({
        "disk": "sda",
        "partitions": [{"name": "sda1", "size": 500, "mount": "/boot", "fstype": "ext4"},
                       {"name": "sda2", "size": 21000, "pv": "vg_base"}],
        "volume_groups": [{"name": "vg_base", "volumes": [
            {"name": "lv_root", "size": 10000, "mount": "/", "fstype": "ext4"},
            {"name": "lv_home", "size": 4996, "mount": "/home", "fstype": "ext4"}]}],
    }))
    mutate(data)
    with pytest.raises(storage.LayoutError, match=message):
        storage.parse_layout("t", data, "layouts.t")


def test_logical_partitions_must_fit_inside_the_extended_one():
    data = {"partitions": [
        {"name": "sda1", "size": 500, "mount": "/", "fstype": "ext4"},
        {"name": "sda2", "size": 100, "extended": True},
        {"name": "sda5", "size": 100, "pv": "vg"}],
        "volume_groups": [{"name": "vg", "volumes": []}]}
    with pytest.raises(storage.LayoutError, match=r"need 101 MiB inside sda2 \(100 MiB\): short by 1 MiB"):
        storage.parse_layout("t", data, "layouts.t")


def _sfdisk_layout(tmp_path, layout, disk_bytes):
    img = tmp_path / f"{layout.name}.img"
    with open(img, "wb") as f:
        f.truncate(disk_bytes)
    subprocess.run(["sfdisk", "--quiet", str(img)], input=storage.sfdisk_script(layout), text=True,
                   check=True, capture_output=True)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(img)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]
    assert table["label"] == "dos"
    sector = table.get("sectorsize", 512)
    return {p["node"][len(str(img)):]: (p["start"] * sector, p["size"] * sector // storage.MIB, p["type"])
            for p in table["partitions"]}


pytestmark_sfdisk = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="needs sfdisk (fdisk package)")


@pytestmark_sfdisk
def test_sfdisk_lays_table1_out_on_the_reports_disk(tmp_path, layouts):
    parts = _sfdisk_layout(tmp_path, layouts["compute"], REPORT_COMPUTE_DISK)
    assert {k: v[1:] for k, v in parts.items()} == {"1": (500, "83"), "2": (21000, "8e"), "3": (216974, "8e")}
    assert parts["1"][0] == storage.MIB
    end = parts["3"][0] + 216974 * storage.MIB
    assert end <= REPORT_COMPUTE_DISK and REPORT_COMPUTE_DISK - end < storage.MIB


@pytestmark_sfdisk
def test_sfdisk_lays_table2_out_with_its_extended_partition(tmp_path, layouts):
    parts = _sfdisk_layout(tmp_path, layouts["controller"], REPORT_CONTROLLER_DISK)
    assert {k: v[1:] for k, v in parts.items()} == {
        "1": (500, "83"), "2": (17000, "8e"), "3": (30000, "8e"), "4": (28792, "5"), "5": (28788, "8e")}
    ext_start, log_start = parts["4"][0], parts["5"][0]
    assert ext_start < log_start and log_start + 28788 * storage.MIB <= ext_start + 28792 * storage.MIB
