"""Disk layouts as data: the report's partition tables, LVM's arithmetic, and the fit check.

Every size is MiB. The kickstart lays a layout out in two halves: an sfdisk script in %pre
creates the partitions exactly as the table numbers them (msdos label, sda4 extended, sda5
logical), and `part --onpart` / `volgroup` / `logvol` lines build the file systems and LVM on
top. Letting Anaconda place the partitions itself would not reproduce the table's numbering or
its extended partition.

A UEFI machine boots from an EFI System Partition on a GPT disk, and a BIOS machine booting a GPT
disk needs a BIOS boot partition for GRUB's core image: `for_firmware` adds them after the table's
own partitions, numbered after its last one, so every partition of the table keeps its number, its
size and the offset it has on msdos. GPT has no extended partition: the logical ones keep their
numbers and offsets and the extended one's span is left as it was, unpartitioned around them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

MIB = 1024 * 1024
EXTENT_MIB = 4          # LVM's default physical extent
PV_METADATA_MIB = 1     # LVM's default pe_start: the first MiB of a PV holds its label and metadata
ALIGN_MIB = 1           # the first partition (and each logical one) starts 1 MiB in
FSTYPES = {"ext4", "xfs", "swap", "ext3", "ext2", "vfat"}
FIRMWARES = ("bios", "uefi")
LABELS = ("dos", "gpt")
ESP_MIB = 600           # what Anaconda makes for /boot/efi on RHEL 9 and Fedora
BIOSBOOT_MIB = 1        # GRUB's core image on a BIOS machine with a GPT disk
GPT_BACKUP_BYTES = 33 * 512     # the backup header and entries in the disk's last sectors
# sfdisk's GPT type aliases
_GPT_TYPES = {"esp": "U", "biosboot": "21686148-6449-6E6F-744E-656564454649", "lvm": "E6D6D379-F507-44C2-A23C-238F2A3DF928",
              "linux": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


class LayoutError(ValueError):
    """A layout that cannot be installed (bad definition, or too big for the disk)."""


@dataclass(frozen=True)
class Partition:
    name: str
    size: int
    number: int
    mount: str | None = None
    fstype: str | None = None
    pv: str | None = None
    extended: bool = False
    logical: bool = False
    kind: str | None = None     # "esp" or "biosboot": added for the firmware, not in the table

    @property
    def sfdisk_type(self) -> str:
        if self.extended:
            return "5"
        return "8e" if self.pv else "83"

    @property
    def gpt_type(self) -> str:
        if self.kind:
            return _GPT_TYPES[self.kind]
        return _GPT_TYPES["lvm"] if self.pv else _GPT_TYPES["linux"]


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    size: int               # as the table states
    mount: str | None
    fstype: str
    shrink_to_fit: bool = False


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    stated_size: int | None
    volumes: tuple[LogicalVolume, ...]


@dataclass(frozen=True)
class Layout:
    name: str
    source: str
    disk: str
    partitions: tuple[Partition, ...]
    volume_groups: tuple[VolumeGroup, ...]
    label: str = "dos"
    firmware: str | None = None     # set by for_firmware

    @property
    def table_partitions(self) -> tuple[Partition, ...]:
        """The partitions the table prints (not those added for the firmware)."""
        return tuple(p for p in self.partitions if not p.kind)


@dataclass(frozen=True)
class PlannedVolume:
    vg: str
    name: str
    size: int               # what gets installed
    stated_size: int
    mount: str | None
    fstype: str


@dataclass
class StoragePlan:
    """A layout resolved with LVM's arithmetic: what will really be installed, and why it differs."""
    layout: Layout
    vg_sizes: dict[str, int]
    volumes: list[PlannedVolume]
    warnings: list[str] = field(default_factory=list)

    @property
    def required_mib(self) -> int:
        return required_disk_mib(self.layout)


def vg_usable_mib(pv_mib: int) -> int:
    """Usable size of a volume group on one PV: `floor((PV - 1) / 4) * 4` (21000 -> 20996)."""
    return max(0, (pv_mib - PV_METADATA_MIB) // EXTENT_MIB * EXTENT_MIB)


def lv_allocated_mib(size: int) -> int:
    """lvcreate rounds a size up to whole extents."""
    return -(-size // EXTENT_MIB) * EXTENT_MIB


def parse_layout(name: str, data: object, where: str) -> Layout:
    """Build a Layout from its YAML mapping, naming the bad key on error."""
    if not isinstance(data, dict):
        raise LayoutError(f"{where}: must be a mapping")
    _only_keys(data, {"source", "disk", "partitions", "volume_groups", "label"}, where)
    label = data.get("label", "dos")
    if label not in LABELS:
        raise LayoutError(f"{where}.label: {label!r} is not one of {', '.join(LABELS)}")
    disk = data.get("disk", "sda")
    if not isinstance(disk, str) or not re.fullmatch(r"[a-z]+[a-z0-9]*", disk):
        raise LayoutError(f"{where}.disk: {disk!r} is not a disk name like sda")
    parts_data = data.get("partitions")
    if not isinstance(parts_data, list) or not parts_data:
        raise LayoutError(f"{where}.partitions: must be a non-empty list")
    partitions: list[Partition] = []
    in_extended = False
    next_primary, next_logical = 1, 5
    for i, p in enumerate(parts_data):
        pw = f"{where}.partitions[{i}]"
        if not isinstance(p, dict):
            raise LayoutError(f"{pw}: must be a mapping")
        _only_keys(p, {"name", "size", "mount", "fstype", "pv", "extended"}, pw)
        extended = _bool(p.get("extended", False), f"{pw}.extended")
        if extended and in_extended:
            raise LayoutError(f"{pw}.extended: an msdos disk holds one extended partition")
        logical = in_extended
        number = next_logical if logical else next_primary
        if logical:
            next_logical += 1
        else:
            next_primary += 1
            if number > 4:
                raise LayoutError(f"{pw}: an msdos disk holds at most 4 primary partitions; "
                                  "put the rest after an extended one")
        expected = f"{disk}{number}"
        if p.get("name") != expected:
            raise LayoutError(f"{pw}.name: expected {expected!r} here, found {p.get('name')!r}")
        size = _size(p.get("size"), f"{pw}.size")
        mount, fstype, pv = p.get("mount"), p.get("fstype"), p.get("pv")
        uses = sum(x is not None for x in (mount, pv)) + extended
        if uses != 1:
            raise LayoutError(f"{pw}: give exactly one of mount, pv or extended")
        if mount is not None:
            _mount(mount, f"{pw}.mount")
            fstype = _fstype(fstype, f"{pw}.fstype")
        elif fstype is not None:
            raise LayoutError(f"{pw}.fstype: only a partition with a mount point takes a file system")
        if pv is not None and (not isinstance(pv, str) or not _NAME.fullmatch(pv)):
            raise LayoutError(f"{pw}.pv: {pv!r} is not a volume group name")
        partitions.append(Partition(expected, size, number, mount, fstype, pv, extended, logical))
        in_extended = in_extended or extended
    if partitions[-1].extended:
        raise LayoutError(f"{where}.partitions: the extended partition holds no logical partition")

    vgs_data = data.get("volume_groups", [])
    if not isinstance(vgs_data, list):
        raise LayoutError(f"{where}.volume_groups: must be a list")
    vgs: list[VolumeGroup] = []
    for i, v in enumerate(vgs_data):
        vw = f"{where}.volume_groups[{i}]"
        if not isinstance(v, dict):
            raise LayoutError(f"{vw}: must be a mapping")
        _only_keys(v, {"name", "size", "volumes"}, vw)
        vname = v.get("name")
        if not isinstance(vname, str) or not _NAME.fullmatch(vname):
            raise LayoutError(f"{vw}.name: {vname!r} is not a volume group name")
        stated = None if v.get("size") is None else _size(v.get("size"), f"{vw}.size")
        lvs: list[LogicalVolume] = []
        vols = v.get("volumes", [])
        if not isinstance(vols, list):
            raise LayoutError(f"{vw}.volumes: must be a list")
        for j, lv in enumerate(vols):
            lw = f"{vw}.volumes[{j}]"
            if not isinstance(lv, dict):
                raise LayoutError(f"{lw}: must be a mapping")
            _only_keys(lv, {"name", "size", "mount", "fstype", "shrink_to_fit"}, lw)
            lname = lv.get("name")
            if not isinstance(lname, str) or not _NAME.fullmatch(lname):
                raise LayoutError(f"{lw}.name: {lname!r} is not a logical volume name")
            fstype = _fstype(lv.get("fstype"), f"{lw}.fstype")
            mount = lv.get("mount")
            if fstype == "swap":
                if mount is not None:
                    raise LayoutError(f"{lw}.mount: swap has no mount point")
            else:
                _mount(mount, f"{lw}.mount")
            lvs.append(LogicalVolume(lname, _size(lv.get("size"), f"{lw}.size"), mount, fstype,
                                     _bool(lv.get("shrink_to_fit", False), f"{lw}.shrink_to_fit")))
        vgs.append(VolumeGroup(vname, stated, tuple(lvs)))

    layout = Layout(name, str(data.get("source", name)), disk, tuple(partitions), tuple(vgs), label)
    _cross_check(layout, where)
    return layout


def _cross_check(layout: Layout, where: str) -> None:
    vg_names = [vg.name for vg in layout.volume_groups]
    if len(set(vg_names)) != len(vg_names):
        raise LayoutError(f"{where}.volume_groups: a volume group is named twice")
    for p in layout.partitions:
        if p.pv and p.pv not in vg_names:
            raise LayoutError(f"{where}: {p.name} is a PV of {p.pv!r}, which volume_groups does not define")
    for vg in layout.volume_groups:
        if not any(p.pv == vg.name for p in layout.partitions):
            raise LayoutError(f"{where}: volume group {vg.name!r} has no partition (pv) behind it")
    mounts = [p.mount for p in layout.partitions if p.mount]
    mounts += [lv.mount for vg in layout.volume_groups for lv in vg.volumes if lv.mount]
    dup = {m for m in mounts if mounts.count(m) > 1}
    if dup:
        raise LayoutError(f"{where}: mount point {sorted(dup)[0]} is used twice")
    if "/" not in mounts:
        raise LayoutError(f"{where}: nothing is mounted at /")
    extended = [p for p in layout.partitions if p.extended]
    if extended:
        logical = [p for p in layout.partitions if p.logical]
        # each logical partition sits 1 MiB after its extended boot record
        need = sum(p.size + ALIGN_MIB for p in logical)
        if need > extended[0].size:
            raise LayoutError(
                f"{where}: the logical partitions need {need} MiB inside {extended[0].name} "
                f"({extended[0].size} MiB): short by {need - extended[0].size} MiB")


def required_disk_mib(layout: Layout) -> int:
    """MiB from the disk's start to the end of the last partition."""
    return ALIGN_MIB + sum(p.size for p in layout.partitions if not p.logical)


def required_bytes(layout: Layout) -> int:
    """Bytes the disk must have: the partitions, and on GPT the backup header after them."""
    return required_disk_mib(layout) * MIB + (GPT_BACKUP_BYTES if layout.label == "gpt" else 0)


def plan(layout: Layout) -> StoragePlan:
    """Resolve a layout with LVM's arithmetic, refusing what cannot hold.

    A volume marked `shrink_to_fit` gives up what its volume group lacks, with a warning;
    anything else that overflows its volume group is an error naming it and the shortfall.
    """
    vg_sizes: dict[str, int] = {}
    volumes: list[PlannedVolume] = []
    warnings: list[str] = []
    for vg in layout.volume_groups:
        pvs = [p for p in layout.partitions if p.pv == vg.name]
        usable = sum(vg_usable_mib(p.size) for p in pvs)
        vg_sizes[vg.name] = usable
        pv_desc = " + ".join(f"{p.name} ({p.size} MiB)" for p in pvs)
        if vg.stated_size is not None and vg.stated_size != usable:
            warnings.append(
                f"layout {layout.name}: {layout.source} states {vg.name} at {vg.stated_size} MiB, "
                f"but LVM makes {usable} MiB of {pv_desc}")
        sizes = [lv_allocated_mib(lv.size) for lv in vg.volumes]
        short = sum(sizes) - usable
        if short > 0:
            for k in reversed(range(len(sizes))):
                if short <= 0:
                    break
                lv = vg.volumes[k]
                if not lv.shrink_to_fit:
                    continue
                give = min(short, sizes[k] - EXTENT_MIB)
                if give <= 0:
                    continue
                sizes[k] -= give
                short -= give
                warnings.append(
                    f"layout {layout.name}: {lv.name} is {lv.size} MiB in {layout.source}, but "
                    f"{vg.name} holds {usable} MiB; installing {lv.name} at {sizes[k]} MiB "
                    f"({give} MiB smaller)")
            if short > 0:
                names = ", ".join(f"{lv.name} ({lv.size} MiB)" for lv in vg.volumes)
                raise LayoutError(
                    f"layout {layout.name}: {vg.name} holds {usable} MiB ({pv_desc}) but its "
                    f"volumes {names} need {usable + short} MiB: short by {short} MiB")
        for lv, size in zip(vg.volumes, sizes):
            volumes.append(PlannedVolume(vg.name, lv.name, size, lv.size, lv.mount, lv.fstype))
    return StoragePlan(layout, vg_sizes, volumes, warnings)


def for_firmware(layout: Layout, firmware: str | None) -> Layout:
    """The layout as a machine with this firmware boots it: UEFI on GPT with an EFI System
    Partition; BIOS as the table says, with a BIOS boot partition when its label is GPT.
    None (not known yet) is taken as BIOS, the table as printed."""
    if firmware is not None and firmware not in FIRMWARES:
        raise LayoutError(f"firmware {firmware!r} is not one of {', '.join(FIRMWARES)}")
    if layout.firmware is not None:
        layout = replace(layout, partitions=layout.table_partitions, firmware=None)
    label = "gpt" if firmware == "uefi" else layout.label
    extra: list[tuple[str, int, str | None, str | None]] = []
    if firmware == "uefi":
        extra.append(("esp", ESP_MIB, "/boot/efi", "efi"))
    elif label == "gpt":
        extra.append(("biosboot", BIOSBOOT_MIB, None, None))
    number = max(p.number for p in layout.partitions)
    parts = list(layout.partitions)
    for kind, size, mount, fstype in extra:
        number += 1
        parts.append(Partition(f"{layout.disk}{number}", size, number, mount, fstype, kind=kind))
    return replace(layout, partitions=tuple(parts), label=label, firmware=firmware)


def check_fit(layout: Layout, disk_bytes: int | None, firmware: str | None = None) -> None:
    """Refuse a layout that does not fit a disk of `disk_bytes`, naming the volume and the shortfall.
    With a firmware, the partitions it adds must fit after the table's: said by name."""
    if disk_bytes is None:
        return
    if firmware is not None or layout.firmware is not None:
        layout = for_firmware(layout, firmware if firmware is not None else layout.firmware)
    disk_mib = disk_bytes // MIB
    end = ALIGN_MIB
    for p in layout.table_partitions:
        if p.logical:
            continue
        end += p.size
        if end > disk_mib:
            what = p.pv or p.mount or "extended"
            total = ALIGN_MIB + sum(q.size for q in layout.table_partitions if not q.logical)
            raise LayoutError(
                f"layout {layout.name} needs {total} MiB but the disk has {disk_mib} MiB "
                f"({disk_bytes} bytes): {p.name} ({what}) ends at {end} MiB, "
                f"short by {total - disk_mib} MiB")
    # GPT keeps a copy of itself in the disk's last sectors: partitions end before it
    usable = (disk_bytes - GPT_BACKUP_BYTES) // MIB if layout.label == "gpt" else disk_mib
    for p in layout.partitions:
        if not p.kind:
            continue
        left = max(0, usable - end)
        if p.size > left:
            what = {"esp": "UEFI needs {} MiB for the EFI System Partition",
                    "biosboot": "BIOS on GPT needs {} MiB for the BIOS boot partition"}[p.kind]
            raise LayoutError(
                f"layout {layout.name}: {what.format(p.size)}; this disk has {left} MiB left "
                f"after the table's partitions ({disk_bytes} bytes)")
        end += p.size
    if end > usable:
        raise LayoutError(f"layout {layout.name} needs {end} MiB and the GPT backup header, "
                          f"but the disk has {usable} MiB before it ({disk_bytes} bytes)")


def partition_starts(layout: Layout) -> dict[str, int]:
    """Each partition's first MiB, as sfdisk places the msdos table (logical partitions 1 MiB
    after each extended boot record); GPT keeps the same offsets."""
    starts: dict[str, int] = {}
    cursor = ALIGN_MIB
    inner = 0
    for p in layout.partitions:
        if p.logical:
            starts[p.name] = inner + ALIGN_MIB
            inner += ALIGN_MIB + p.size
            continue
        starts[p.name] = cursor
        if p.extended:
            inner = cursor
        cursor += p.size
    return starts


def sfdisk_script(layout: Layout) -> str:
    """The sfdisk input that creates the layout's partitions, numbered as the table numbers them."""
    if layout.label == "gpt":
        return _gpt_script(layout)
    lines = ["label: dos"]
    for p in layout.partitions:
        boot = ", bootable" if p.mount == "/boot" else ""
        lines.append(f"size={p.size}MiB, type={p.sfdisk_type}{boot}")
    return "\n".join(lines) + "\n"


def _gpt_script(layout: Layout) -> str:
    # named lines and explicit starts: GPT numbers must match the table's even where it skips
    # one (Table 2's extended sda4), and the offsets must be those of the msdos layout
    starts = partition_starts(layout)
    lines = ["label: gpt"]
    for p in layout.partitions:
        if p.extended:
            continue
        attrs = ", attrs=LegacyBIOSBootable" if p.mount == "/boot" and layout.firmware != "uefi" else ""
        lines.append(f"/dev/{p.name} : start={starts[p.name] * MIB // 512}, size={p.size}MiB, "
                     f"type={p.gpt_type}{attrs}")
    return "\n".join(lines) + "\n"


def _only_keys(d: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise LayoutError(f"{where}.{extra[0]}: unknown key (expected one of {', '.join(sorted(allowed))})")


def _size(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LayoutError(f"{where}: {value!r} is not a positive whole number of MiB")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise LayoutError(f"{where}: {value!r} is not true or false")
    return value


def _mount(value: object, where: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"/[A-Za-z0-9_./-]*", value) or "//" in value \
            or "/../" in value + "/":
        raise LayoutError(f"{where}: {value!r} is not an absolute mount point")


def _fstype(value: object, where: str) -> str:
    if value not in FSTYPES:
        raise LayoutError(f"{where}: {value!r} is not one of {', '.join(sorted(FSTYPES))}")
    return value  # type: ignore[return-value]
