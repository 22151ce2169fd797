"""``wattprint check``: which meters this host has, and for each missing one why and what to do."""

from __future__ import annotations

import json
import os
from typing import Any

from . import __version__
from .config import Config
from .sensors import MeterError, cpu_model, open_gpu, open_rapl
from .sensors.cpu_estimate import SOURCE as ESTIMATE_SOURCE


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
    report: dict[str, Any] = {"version": __version__, "vm": _hypervisor(cfg)}
    # GPU
    try:
        gpu = open_gpu(cfg)
    except MeterError as e:
        gpu, report["gpu"] = None, {"state": "error", "detail": str(e), "gpus": []}
    if gpu is not None:
        st = gpu.status
        gpus = []
        for r in gpu.read():
            d = r.device
            gpus.append({"index": d.index, "uuid": d.uuid, "name": d.name, "energy_method": d.energy_method,
                         "mig_mode": d.mig_mode, "power_w": (r.power_mw or 0) / 1000,
                         "memory_total_bytes": d.memory_total, "processes": len(r.processes),
                         "error": r.error})
        report["gpu"] = {"backend": st.backend, "state": st.state, "detail": st.detail,
                         "driver": st.driver, "gpus": gpus}
        gpu.close()
    elif "gpu" not in report:
        report["gpu"] = {"state": "disabled", "detail": "gpu.backend=none", "gpus": []}
    # RAPL
    rapl = open_rapl(cfg)
    if rapl is None:
        report["rapl"] = {"usable": False, "detail": "cpu.rapl=off", "zones": []}
    else:
        detail = rapl.problem
        if not rapl.usable and rapl.zones:
            detail = "no readable package or psys zone: " + "; ".join(
                sorted({z.problem for z in rapl.zones if z.problem}))
        if not rapl.usable and report["vm"]:
            detail += f" (this looks like a VM: {report['vm']}; VMs rarely expose RAPL)"
        report["rapl"] = {"usable": rapl.usable, "detail": detail, "zones": [
            {"zone": z.zone, "domain": z.domain, "socket": z.socket, "readable": z.readable,
             "used_in_total": z.used_in_total, "max_energy_range_uj": z.max_range_uj,
             "problem": z.problem} for z in rapl.zones]}
    model = cpu_model(cfg)
    report["cpu_estimate"] = {"used": not report["rapl"]["usable"], "vcpus": model.vcpus,
                              "min_watts_per_vcpu": model.min_w, "max_watts_per_vcpu": model.max_w,
                              "model": model.describe(), "source": ESTIMATE_SOURCE}
    report["carbon"] = _carbon(cfg)
    try:
        pids = [n for n in os.listdir(cfg.path.procfs) if n.isdigit()]
        report["procfs"] = {"readable": True, "processes": len(pids)}
    except OSError as e:
        report["procfs"] = {"readable": False, "detail": f"{cfg.path.procfs}: {e.strerror}"}
    return report


def _carbon(cfg: Config) -> dict[str, Any]:
    """Region, provider, intensity and its source; live providers are polled once (short timeout)."""
    import asyncio

    from .cli import build_carbon, resolve_region

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
    out = []
    g = report["gpu"]
    if g["state"] == "no_library":
        out.append("GPU: install the NVIDIA driver, or run the container with the NVIDIA runtime. "
                   "Without it Wattprint measures CPU only.")
    elif g["state"] in ("driver_not_loaded", "error"):
        out.append(f"GPU: {g['detail']}")
    if not report["rapl"]["usable"]:
        zones = report["rapl"]["zones"]
        if any("CVE-2020-8694" in z["problem"] for z in zones):
            out.append("CPU: run as root (or a udev rule making energy_uj readable) to measure with RAPL; "
                       "until then CPU energy is an estimate (method=\"estimate\").")
        else:
            out.append("CPU: no RAPL here, so CPU energy is an estimate (method=\"estimate\"); tune it with "
                       "--cpu.estimate-min-watts-per-vcpu / --cpu.estimate-max-watts-per-vcpu.")
    if report["carbon"]["region"] == "unknown":
        out.append("Carbon: set --carbon.region (e.g. aws:us-east-1, europe-west4, FR; `wattprint regions` "
                   "lists them) — until then the world average intensity is used.")
    return out


def render_text(report: dict[str, Any]) -> str:
    ok, no = "✔", "✘"
    lines = [f"Wattprint {report['version']} — host check", ""]
    g = report["gpu"]
    mark = ok if g["state"] == "ok" and g["gpus"] else no
    lines.append(f"{mark} GPU ({g.get('backend', 'nvml')}): {g['state']} — {g['detail']}"
                 + (f", driver {g['driver']}" if g.get("driver") else ""))
    for d in g["gpus"]:
        err = f"  ERROR {d['error']}" if d["error"] else ""
        lines.append(f"    GPU {d['index']} {d['name']} {d['uuid']}: energy via {d['energy_method']}, "
                     f"MIG {d['mig_mode']}, {d['power_w']:.1f} W, {d['processes']} process(es){err}")
    r = report["rapl"]
    lines.append(f"{ok if r['usable'] else no} RAPL: {'usable' if r['usable'] else 'not usable'}"
                 + (f" — {r['detail']}" if r["detail"] else ""))
    for z in r["zones"]:
        state = "readable" if z["readable"] else f"UNREADABLE: {z['problem']}"
        total = ", in node total" if z["used_in_total"] else ""
        lines.append(f"    {z['zone']} {z['domain']} socket {z['socket']}: {state}{total}")
    e = report["cpu_estimate"]
    lines.append(f"{ok} CPU estimate ({'in use' if e['used'] else 'fallback, not in use'}): {e['model']}")
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
    if report["vm"]:
        lines.append(f"ℹ virtual machine detected: {report['vm']}")
    advice = _advice(report)
    if advice:
        lines += ["", "What to do:"] + [f"  - {a}" for a in advice]
    return "\n".join(lines) + "\n"


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"
