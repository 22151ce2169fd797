"""Default GPU idle power by model, used until a baseline is learned or configured.

Values are typical board power at idle (P0/P8, no process, persistence mode on) as reported by
`nvidia-smi` on public systems; they vary by ±30% with clocks, temperature and firmware, so
Wattprint prefers a configured value (``gpu.idle_power_watts``) or one learned from the lowest
power seen while no process was active. Matched by substring of the NVML name: the most specific
(longest) matching key wins, so "NVIDIA GH200 480GB" is a GH200, not an H200, and "A100 80GB PCIe"
is not an SXM A100. Rows added for a 2026 fleet (B200, GB200, H20, L40S, H100 NVL, A100 PCIe) are
typical idle draws reported by operators (nvidia-smi, persistence on); configure or let Wattprint
learn the real value.

AMD Instinct rows match amdsmi's ``market_name`` ("AMD Instinct MI300X", "... MI300X VF") and are
socket power (``current_socket_power``), the whole OAM module:

* MI355X 238 W: rocm 7.0 at idle, confirmed "in line with the expected power draw" by AMD
  (ROCm/legacy-rocm-build#5219, which also reads 137 W for an idle air-cooled B200: the B200 row).
* MI300X 140 W: an MI300X holding a model at 0 % GFX reads 191 W (ROCm/legacy-rocm-build#5231);
  with nothing loaded operators see 120-150 W. An estimate: configure or let Wattprint learn it.
* MI325X 160 W: no public idle reading found; MI300X's compute die with 256 GB HBM3E, so
  MI300X's value plus the larger memory's share. An estimate, the least certain row here.
"""

from __future__ import annotations

# (substring of nvmlDeviceGetName or amdsmi's market_name, watts); the longest matching key wins
IDLE_W: tuple[tuple[str, float], ...] = (
    ("H200", 75.0),
    ("H100 PCIe", 50.0),
    ("H100 NVL", 60.0),
    ("H100", 70.0),
    ("GH200", 90.0),
    ("GB200", 150.0),
    ("B200", 140.0),          # 137 W idle, air-cooled (ROCm/legacy-rocm-build#5219)
    ("H20", 60.0),
    ("A100-PCIE", 35.0),
    ("A100 80GB PCIe", 40.0),
    ("A100", 55.0),
    ("L40S", 35.0),
    ("L40", 35.0),
    ("L4", 16.0),
    ("A10G", 18.0),
    ("A10", 18.0),
    ("T4", 10.0),
    ("V100", 40.0),
    ("MI355X", 238.0),
    ("MI325X", 160.0),
    ("MI300X", 140.0),
)


def lookup(name: str) -> float | None:
    """The idle watts of the most specific key that ``name`` contains (None: no row)."""
    hits = [(len(key), watts) for key, watts in IDLE_W if key.lower() in name.lower()]
    return max(hits)[1] if hits else None
