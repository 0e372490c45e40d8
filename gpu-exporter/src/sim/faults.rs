//! The fault schedule of the simulated fleet (from flags or a TOML file) and the ground-truth file
//! it produces for evaluating detectors.

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Cooling degrades: temperature climbs to the slowdown threshold, clocks fall, HW/SW thermal
    /// slowdown set, thermal violation time grows.
    ThermalThrottle,
    /// The power limit is lowered: power pinned at the cap, clocks down, SW_POWER_CAP set.
    PowerCap,
    /// SM clocks fall a third with no throttle reason reported.
    ClockDrop,
    /// HBM errors: single-bit ECC counts climb fast, occasional double-bit errors with XID 48 and
    /// remapped rows.
    EccStorm,
    /// XID 79: the GPU falls off the bus and stops answering until the fault ends (a reset).
    Xid79,
    /// XID 48: a double-bit ECC error.
    Xid48,
    /// XID 94: a contained ECC error (row remapped, application killed).
    Xid94,
    /// XID 31: MMU fault (an application touched memory it should not), repeating.
    Xid31,
    /// The PCIe link retrains at gen3 x8 instead of gen5 x16, with replays.
    PcieDowntrain,
    /// CRC errors and replays on one NVLink link.
    NvlinkCrc,
    /// The GPU runs its collectives 10–20% slower; no counter moves.
    Straggler,
    /// Every rank on the node sees lower NCCL bus bandwidth (a network problem).
    NcclBusbwSag,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::ThermalThrottle,
        FaultKind::PowerCap,
        FaultKind::ClockDrop,
        FaultKind::EccStorm,
        FaultKind::Xid79,
        FaultKind::Xid48,
        FaultKind::Xid94,
        FaultKind::Xid31,
        FaultKind::PcieDowntrain,
        FaultKind::NvlinkCrc,
        FaultKind::Straggler,
        FaultKind::NcclBusbwSag,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ThermalThrottle => "thermal",
            FaultKind::PowerCap => "power-cap",
            FaultKind::ClockDrop => "clock-drop",
            FaultKind::EccStorm => "ecc-storm",
            FaultKind::Xid79 => "xid79",
            FaultKind::Xid48 => "xid48",
            FaultKind::Xid94 => "xid94",
            FaultKind::Xid31 => "xid31",
            FaultKind::PcieDowntrain => "pcie-downtrain",
            FaultKind::NvlinkCrc => "nvlink-crc",
            FaultKind::Straggler => "straggler",
            FaultKind::NcclBusbwSag => "nccl-sag",
        }
    }

    /// Whether the fault affects a whole node rather than one GPU.
    pub fn is_node_wide(self) -> bool {
        self == FaultKind::NcclBusbwSag
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|kind| kind.name()).collect();
                format!(
                    "unknown fault kind {text:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// One scheduled fault. Times are offsets from the simulation's start.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// Node index.
    pub node: usize,
    /// GPU index on the node; `None` for node-wide faults.
    pub gpu: Option<usize>,
    pub start: Duration,
    /// `None`: until the simulation ends.
    pub duration: Option<Duration>,
}

impl FaultSpec {
    pub fn active_at(&self, elapsed: Duration) -> bool {
        elapsed >= self.start && self.duration.is_none_or(|d| elapsed < self.start + d)
    }
}

/// Parse a node reference: an index (`3`) or a simulated hostname (`sim-node-03`).
fn parse_node(text: &str) -> Result<usize, String> {
    let digits = text.rsplit('-').next().unwrap_or(text);
    digits
        .parse()
        .map_err(|_| format!("node {text:?} is neither an index nor a sim-node-NN hostname"))
}

fn parse_duration(what: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{what} {text:?}: {e} (write e.g. 90s, 5m, 1h)"))
}

/// The flag form: `KIND:NODE[/GPU]:START[:DURATION]`, e.g. `thermal:sim-node-00/3:60s:5m` or
/// `nccl-sag:1:2m`.
impl FromStr for FaultSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        if !(3..=4).contains(&parts.len()) {
            return Err(format!(
                "fault {text:?}: expected KIND:NODE[/GPU]:START[:DURATION], e.g. thermal:sim-node-00/3:60s:5m"
            ));
        }
        let kind: FaultKind = parts[0].parse()?;
        let (node, gpu) = match parts[1].split_once('/') {
            Some((node, gpu)) => {
                let gpu = gpu
                    .parse()
                    .map_err(|_| format!("fault {text:?}: GPU {gpu:?} is not an index"))?;
                (parse_node(node)?, Some(gpu))
            }
            None => (parse_node(parts[1])?, None),
        };
        let spec = FaultSpec {
            kind,
            node,
            gpu,
            start: parse_duration("start", parts[2])?,
            duration: parts
                .get(3)
                .map(|d| parse_duration("duration", d))
                .transpose()?,
        };
        spec.check()?;
        Ok(spec)
    }
}

impl FaultSpec {
    fn check(&self) -> Result<(), String> {
        if !self.kind.is_node_wide() && self.gpu.is_none() {
            return Err(format!(
                "fault {} needs a GPU: write NODE/GPU, e.g. sim-node-00/3",
                self.kind
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultFile {
    #[serde(default)]
    fault: Vec<FaultEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultEntry {
    kind: String,
    node: toml::Value,
    gpu: Option<usize>,
    start: String,
    duration: Option<String>,
}

/// A TOML schedule:
///
/// ```toml
/// [[fault]]
/// kind = "thermal"
/// node = "sim-node-00"   # or an index
/// gpu = 3
/// start = "60s"
/// duration = "5m"        # optional: until the end
/// ```
pub fn parse_file(text: &str) -> Result<Vec<FaultSpec>, String> {
    let file: FaultFile = toml::from_str(text).map_err(|e| format!("fault schedule: {e}"))?;
    file.fault
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let context = |e: String| format!("fault schedule, fault #{}: {e}", index + 1);
            let node = match &entry.node {
                toml::Value::Integer(n) if *n >= 0 => *n as usize,
                toml::Value::String(s) => parse_node(s).map_err(context)?,
                other => {
                    return Err(context(format!(
                        "node must be an index or a hostname, not {other}"
                    )));
                }
            };
            let spec = FaultSpec {
                kind: entry.kind.parse().map_err(context)?,
                node,
                gpu: entry.gpu,
                start: parse_duration("start", &entry.start).map_err(context)?,
                duration: entry
                    .duration
                    .as_deref()
                    .map(|d| parse_duration("duration", d))
                    .transpose()
                    .map_err(context)?,
            };
            spec.check().map_err(context)?;
            Ok(spec)
        })
        .collect()
}

/// One row of the ground truth: what was injected where and when.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    pub fault: FaultKind,
    pub host: String,
    /// GPU index and UUID; empty for node-wide faults.
    pub gpu: Option<(usize, String)>,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
}

/// Write the ground truth as CSV: `fault,host,gpu,uuid,start,end` with RFC 3339 UTC times (`end`
/// empty when the fault lasts to the end of the run).
pub fn write_ground_truth(path: &Path, rows: &[GroundTruth]) -> std::io::Result<()> {
    let mut out = std::fs::File::create(path)?;
    writeln!(out, "fault,host,gpu,uuid,start,end")?;
    let time = |t: SystemTime| {
        chrono::DateTime::<chrono::Utc>::from(t)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    for row in rows {
        let (gpu, uuid) = match &row.gpu {
            Some((index, uuid)) => (index.to_string(), uuid.clone()),
            None => (String::new(), String::new()),
        };
        writeln!(
            out,
            "{},{},{},{},{},{}",
            row.fault,
            row.host,
            gpu,
            uuid,
            time(row.start),
            row.end.map(time).unwrap_or_default()
        )?;
    }
    out.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_and_files_with_clear_errors() {
        let spec: FaultSpec = "thermal:sim-node-02/3:60s:5m".parse().unwrap();
        assert_eq!(
            spec,
            FaultSpec {
                kind: FaultKind::ThermalThrottle,
                node: 2,
                gpu: Some(3),
                start: Duration::from_secs(60),
                duration: Some(Duration::from_secs(300)),
            }
        );
        let sag: FaultSpec = "nccl-sag:1:2m".parse().unwrap();
        assert_eq!((sag.node, sag.gpu, sag.duration), (1, None, None));
        assert!(
            "meltdown:0/1:1s"
                .parse::<FaultSpec>()
                .unwrap_err()
                .contains("expected one of thermal")
        );
        assert!(
            "straggler:0:1s"
                .parse::<FaultSpec>()
                .unwrap_err()
                .contains("needs a GPU")
        );
        assert!(
            "thermal:0/1:soon"
                .parse::<FaultSpec>()
                .unwrap_err()
                .contains("start \"soon\"")
        );

        let file = "[[fault]]\nkind = \"xid79\"\nnode = \"sim-node-01\"\ngpu = 0\nstart = \"30s\"\n\n[[fault]]\nkind = \"nccl-sag\"\nnode = 0\nstart = \"1m\"\nduration = \"2m\"\n";
        let specs = parse_file(file).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].kind, FaultKind::Xid79);
        assert!(
            specs[1].active_at(Duration::from_secs(100))
                && !specs[1].active_at(Duration::from_secs(200))
        );
        let error =
            parse_file("[[fault]]\nkind = \"thermal\"\nnode = 0\nstart = \"1s\"\n").unwrap_err();
        assert!(
            error.contains("fault #1") && error.contains("needs a GPU"),
            "{error}"
        );
    }
}
