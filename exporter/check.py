"""``wattprint check``: which meters this host has, and for each missing one why and what to do."""

from __future__ import annotations

import json
import os
from typing import Any

from . import __version__
from .config import Config
from .sensors import probe_all, registry
from .sensors.base import Probe


def _hypervisor(cfg: Config) -> str:
    """A hypervisor's name when this looks like a VM, else ''."""
    try:
        with open(os.path.join(cfg.path.sysfs, "class/dmi/id/sys_vendor")) as fh:
            vendor = fh.read().strip()
    except OSError:
        vendor = ""
    try:
        with open(os.path.join(cfg.path.procfs, "cpuinfo")) as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    if " hypervisor" in flags:
        return vendor or "unknown hypervisor"
    return vendor if vendor in ("QEMU", "Amazon EC2", "Google", "Microsoft Corporation", "Xen") else ""


def diagnose(cfg: Config) -> dict[str, Any]:
    """Every registered meter probed (usable or not, and why), the one each kind would use,
    the carbon setup and procfs."""
    report: dict[str, Any] = {"version": __version__, "vm": _hypervisor(cfg)}
    probes = probe_all(cfg)
    report["meters"] = [{"kind": p.kind, "name": p.name, "usable": p.usable, "summary": p.headline,
                         "selected": False} for p in probes]
    gpu = _selected_gpu(cfg, [p for p in probes if p.kind == "gpu"])
    cpu = _selected_cpu(cfg, [p for p in probes if p.kind == "cpu"])
    for row in report["meters"]:
        row["selected"] = (row["kind"], row["name"]) in {("gpu", gpu.name if gpu else ""), ("cpu", cpu)}
    report["gpu"] = gpu.info if gpu is not None else {"state": "disabled", "detail": "gpu.backend=none", "gpus": []}
    report["_probes"] = probes
    by_name = {p.name: p for p in probes if p.kind == "cpu"}
    rapl = by_name.get("rapl")
    report["rapl"] = rapl.info if rapl is not None else {"usable": False, "detail": "not built", "zones": []}
    if not report["rapl"]["usable"] and report["vm"]:
        report["rapl"]["detail"] += f" (this looks like a VM: {report['vm']}; VMs rarely expose RAPL)"
    hwmon = by_name.get("hwmon")
    report["hwmon"] = hwmon.info if hwmon is not None else {"usable": False, "detail": "not built", "sensors": []}
    report["cpu_estimate"] = {"used": cpu == "estimate", **by_name["estimate"].info}
    report["cpu_meter"] = cpu
    report["unavailable_requested"] = _unavailable_requested(cfg, probes)
    report["carbon"] = _carbon(cfg)
    try:
        pids = [n for n in os.listdir(cfg.path.procfs) if n.isdigit()]
        report["procfs"] = {"readable": True, "processes": len(pids)}
    except OSError as e:
        report["procfs"] = {"readable": False, "detail": f"{cfg.path.procfs}: {e.strerror}"}
    return report


def _selected_gpu(cfg: Config, probes: list[Probe]) -> Probe | None:
    """The GPU backend ``serve`` would use: the named one, or auto's first usable (else the
    first auto backend, in its failed state)."""
    if cfg.gpu.backend == "none":
        return None
    if cfg.gpu.backend != "auto":
        return next(p for p in probes if p.name == cfg.gpu.backend)
    auto = [p for p in probes if registry.spec("gpu", p.name).auto]
    return next((p for p in auto if p.usable), auto[0] if auto else None)


def _selected_cpu(cfg: Config, probes: list[Probe]) -> str:
    if cfg.cpu.meter != "auto":
        return cfg.cpu.meter
    return next(p.name for p in probes if p.usable)


def _unavailable_requested(cfg: Config, probes: list[Probe]) -> list[str]:
    """The meters the configuration names explicitly (not auto) that are not usable here, as
    ``--flag=value: headline``: ``check`` then exits 1, so it can gate an init container."""
    out = []
    for kind, flag, name in (("gpu", "--gpu.backend", cfg.gpu.backend), ("cpu", "--cpu.meter", cfg.cpu.meter)):
        if name in ("auto", "none"):
            continue
        p = next(p for p in probes if p.kind == kind and p.name == name)
        if not p.usable:
            out.append(f"{flag}={name}: {p.headline}")
    return out


def _carbon(cfg: Config) -> dict[str, Any]:
    """Region, provider, intensity and its source; live providers are polled once (short timeout)."""
    import asyncio

    from .daemon import build_carbon, resolve_region

    async def run() -> Any:
        carbon = build_carbon(cfg, await resolve_region(cfg))
        if cfg.carbon.providers:
            try:
                await asyncio.wait_for(carbon.service.poll_once(), timeout=10)
            except TimeoutError:
                pass
        return carbon

    carbon = asyncio.run(run())
    cur = carbon.current()
    return {"region": carbon.region.key, "region_from": carbon.region.how,
            "provider": cur.provider, "zone": cur.zone, "grams_per_kwh": cur.grams_per_kwh,
            "age_s": cur.age_s, "source": cur.source, "static_grams_per_kwh": carbon.region.grams_per_kwh,
            "static_source": carbon.region.source, "pue": carbon.pue, "pue_source": carbon.pue_source,
            "providers": {name: {"up": st["up"], "last_error": st["last_error"]}
                          for name, st in carbon.service.stats().items()},
            "counterfactual_regions": carbon.counterfactual}


def _advice(report: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for p in report["_probes"]:
        selected = any(m["selected"] for m in report["meters"] if m["name"] == p.name and m["kind"] == p.kind)
        if selected or (p.kind == "cpu" and report["cpu_meter"] == "estimate"):  # why no measurement
            out += p.advice
    if report["carbon"]["region"] == "unknown":
        out.append("Carbon: set --carbon.region (e.g. aws:us-east-1, europe-west4, FR; `wattprint regions` "
                   "lists them) — until then the world average intensity is used.")
    return out


def render_text(report: dict[str, Any]) -> str:
    ok, no = "✔", "✘"
    lines = [f"Wattprint {report['version']} — host check", ""]
    for p in report["_probes"]:
        if p.kind == "cpu" and p.name == "estimate":
            e = report["cpu_estimate"]
            lines.append(f"{ok} CPU estimate ({'in use' if e['used'] else 'fallback, not in use'}): {e['model']}")
            continue
        headline = p.headline
        if p.name == "rapl":
            r = report["rapl"]
            headline = f"RAPL: {'usable' if r['usable'] else 'not usable'}" + (f" — {r['detail']}" if r["detail"] else "")
        mark = ok if p.usable else ("–" if p.info.get("state") == "disabled" else no)
        lines.append(f"{mark} {headline}")
        lines += [f"    {line}" for line in p.lines]
    p = report["procfs"]
    lines.append(f"{ok if p['readable'] else no} procfs: " + (f"{p['processes']} processes visible"
                 if p["readable"] else p["detail"]))
    c = report["carbon"]
    mark = ok if c["region"] != "unknown" else no
    live = f", live from {c['provider']} (zone {c['zone']}, {c['age_s']:.0f} s old)" if c["provider"] != "static" else ""
    lines.append(f"{mark} Carbon: region {c['region']} (from {c['region_from']}): {c['grams_per_kwh']:.1f} gCO2e/kWh"
                 f"{live}; source: {c['source']}; PUE {c['pue']:g} ({c['pue_source']})")
    for name, st in c["providers"].items():
        lines.append(f"    provider {name}: {'up' if st['up'] else 'DOWN: ' + str(st['last_error'])}")
    used = [f"{m['kind']} {m['name']}" for m in report["meters"] if m["selected"]]
    lines.append(f"ℹ meters in use: {', '.join(used) or 'none'} (registered: "
                 + ", ".join(f"{m['kind']} {m['name']}" for m in report["meters"]) + ")")
    if report["vm"]:
        lines.append(f"ℹ virtual machine detected: {report['vm']}")
    for line in report["unavailable_requested"]:
        lines.append(f"{no} asked for but not usable (exit status 1): {line}")
    advice = _advice(report)
    if advice:
        lines += ["", "What to do:"] + [f"  - {a}" for a in advice]
    return "\n".join(lines) + "\n"


def render_json(report: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=2) + "\n"
