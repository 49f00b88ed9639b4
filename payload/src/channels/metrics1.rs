//! `metrics1` with `"source": "internal"`: samples the kernel's counters every `interval`
//! milliseconds and sends them as the reference bridge does.
//!
//! The first message is a `meta` object (`timestamp`, `now`, `interval`, and per metric its
//! `name`, `derive`, `instances`, `units`, `semantics`); a new `meta` follows whenever the
//! set of instances changes. Every sample is a JSON array `[[v1, v2, [i1, i2], ...]]`:
//! values are interpolated onto the exact interval grid, `derive` (`delta`, `rate` per
//! second) is applied, and values equal to the previous sample are compressed to `null`
//! (trailing ones dropped); `false` is a value that is not available. Other sources (PCP) are
//! `not-supported`, as on a system without PCP.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::fsutil::JsonObject;
use super::samplers::{self, Sink};
use crate::channel::{Channel, ChannelError, ChannelResult, Input};
use ferry_protocol::problem;

const CPU: u32 = 1;
const MEMORY: u32 = 2;
const BLOCK: u32 = 4;
const NETWORK: u32 = 8;
const MOUNT: u32 = 16;
const CGROUP: u32 = 32;
const DISK: u32 = 64;
const TEMPERATURE: u32 = 128;

struct Desc {
    name: &'static str,
    units: &'static str,
    semantics: &'static str,
    instanced: bool,
    sampler: u32,
}

const fn d(
    name: &'static str,
    units: &'static str,
    semantics: &'static str,
    instanced: bool,
    sampler: u32,
) -> Desc {
    Desc {
        name,
        units,
        semantics,
        instanced,
        sampler,
    }
}

static DESCS: &[Desc] = &[
    d("cpu.basic.nice", "millisec", "counter", false, CPU),
    d("cpu.basic.user", "millisec", "counter", false, CPU),
    d("cpu.basic.system", "millisec", "counter", false, CPU),
    d("cpu.basic.iowait", "millisec", "counter", false, CPU),
    d("cpu.core.nice", "millisec", "counter", true, CPU),
    d("cpu.core.user", "millisec", "counter", true, CPU),
    d("cpu.core.system", "millisec", "counter", true, CPU),
    d("cpu.core.iowait", "millisec", "counter", true, CPU),
    d("memory.free", "bytes", "instant", false, MEMORY),
    d("memory.used", "bytes", "instant", false, MEMORY),
    d("memory.cached", "bytes", "instant", false, MEMORY),
    d("memory.swap-used", "bytes", "instant", false, MEMORY),
    d("block.device.read", "bytes", "counter", true, BLOCK),
    d("block.device.written", "bytes", "counter", true, BLOCK),
    d("disk.all.read", "bytes", "counter", false, DISK),
    d("disk.all.written", "bytes", "counter", false, DISK),
    d("disk.dev.read", "bytes", "counter", true, DISK),
    d("disk.dev.written", "bytes", "counter", true, DISK),
    d("network.all.rx", "bytes", "counter", false, NETWORK),
    d("network.all.tx", "bytes", "counter", false, NETWORK),
    d("network.interface.rx", "bytes", "counter", true, NETWORK),
    d("network.interface.tx", "bytes", "counter", true, NETWORK),
    d("mount.total", "bytes", "instant", true, MOUNT),
    d("mount.used", "bytes", "instant", true, MOUNT),
    d("cgroup.memory.usage", "bytes", "instant", true, CGROUP),
    d("cgroup.memory.limit", "bytes", "instant", true, CGROUP),
    d("cgroup.memory.sw-usage", "bytes", "instant", true, CGROUP),
    d("cgroup.memory.sw-limit", "bytes", "instant", true, CGROUP),
    d("cgroup.cpu.usage", "millisec", "counter", true, CGROUP),
    d("cgroup.cpu.shares", "count", "instant", true, CGROUP),
    d("cpu.temperature", "celsius", "instant", true, TEMPERATURE),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Derive {
    None,
    Delta,
    Rate,
}

struct Instance {
    name: String,
    seen: bool,
    value: f64,
}

struct Metric {
    desc: &'static Desc,
    /// `derive` as the peer gave it (echoed in `meta`).
    derive: Option<String>,
    instances: Vec<Instance>,
    value: f64,
}

/// Collects one round of samples into the requested metrics.
struct Sampling {
    metrics: Vec<Metric>,
    omit: Vec<String>,
    samplers: u32,
    need_meta: bool,
    sensors: Option<Vec<String>>,
}

impl Sink for Sampling {
    fn sample(&mut self, metric: &str, instance: Option<&str>, value: i64) {
        if instance.is_some_and(|i| self.omit.iter().any(|o| o == i)) {
            return;
        }
        for m in self.metrics.iter_mut().filter(|m| m.desc.name == metric) {
            if m.desc.instanced {
                let name = instance.unwrap_or_default();
                match m.instances.iter_mut().find(|i| i.name == name) {
                    Some(inst) => {
                        inst.seen = true;
                        inst.value = value as f64;
                    }
                    None => {
                        m.instances.push(Instance {
                            name: name.to_owned(),
                            seen: true,
                            value: value as f64,
                        });
                        self.need_meta = true;
                    }
                }
            } else {
                m.value = value as f64;
            }
        }
    }
}

impl Sampling {
    fn sample_all(&mut self) {
        for m in &mut self.metrics {
            m.value = f64::NAN;
            for i in &mut m.instances {
                i.seen = false;
            }
        }
        let s = self.samplers;
        if s & CPU != 0 {
            samplers::cpu(self);
        }
        if s & MEMORY != 0 {
            samplers::memory(self);
        }
        if s & BLOCK != 0 {
            samplers::block(self);
        }
        if s & NETWORK != 0 {
            samplers::network(self);
        }
        if s & MOUNT != 0 {
            samplers::mounts(self);
        }
        if s & CGROUP != 0 {
            samplers::cgroups(self);
        }
        if s & DISK != 0 {
            samplers::disk(self);
        }
        if s & TEMPERATURE != 0 {
            let sensors = self
                .sensors
                .get_or_insert_with(samplers::find_cpu_sensors)
                .clone();
            samplers::cpu_temperature(&sensors, self);
        }
        for m in &mut self.metrics {
            let before = m.instances.len();
            m.instances.retain(|i| i.seen);
            if m.instances.len() != before {
                self.need_meta = true;
            }
        }
    }

    /// The instance names per metric (`None` for metrics without instances).
    fn layout(&self) -> Vec<Option<Vec<String>>> {
        self.metrics
            .iter()
            .map(|m| {
                m.desc
                    .instanced
                    .then(|| m.instances.iter().map(|i| i.name.clone()).collect())
            })
            .collect()
    }

    fn values(&self) -> Vec<Vec<f64>> {
        self.metrics
            .iter()
            .map(|m| {
                if m.desc.instanced {
                    m.instances.iter().map(|i| i.value).collect()
                } else {
                    vec![m.value]
                }
            })
            .collect()
    }

    fn meta(&self, interval: i64, now: i64) -> Bytes {
        let mut metrics = Vec::from(&b"["[..]);
        for (n, m) in self.metrics.iter().enumerate() {
            if n > 0 {
                metrics.push(b',');
            }
            // `derive` is always there (`null`: none), as Cockpit 337 writes it.
            let mut obj = JsonObject::new().str("name", m.desc.name);
            obj = match &m.derive {
                Some(derive) => obj.str("derive", derive),
                None => obj.field("derive", &Value::Null),
            };
            if m.desc.instanced {
                let names: Vec<Value> = m
                    .instances
                    .iter()
                    .map(|i| Value::String(i.name.clone()))
                    .collect();
                obj = obj.field("instances", &Value::Array(names));
            }
            let obj = obj
                .str("units", m.desc.units)
                .str("semantics", m.desc.semantics)
                .finish();
            metrics.extend_from_slice(&obj);
        }
        metrics.push(b']');
        JsonObject::new()
            .str("source", "internal")
            .field("timestamp", &Value::from(now))
            .field("now", &Value::from(now))
            .field("interval", &Value::from(interval))
            .raw("metrics", &metrics)
            .finish()
    }
}

/// One element of a data message.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Null,
    Num(f64),
    False,
    Array(Vec<Out>),
}

/// Put `node` at `index`, padding with `null`.
fn push_at(array: &mut Vec<Out>, index: usize, node: Out) {
    while array.len() < index {
        array.push(Out::Null);
    }
    array.push(node);
}

/// Derivation, interpolation and compression of samples, as the reference's metrics base.
struct Compressor {
    modes: Vec<Derive>,
    meta_interval: i64,
    /// Instances of the `meta` the last sample was sent with (`None` before any).
    last_layout: Option<Vec<Option<Vec<String>>>>,
    next_layout: Vec<Option<Vec<String>>>,
    meta_reset: bool,
    last_data: Vec<Vec<f64>>,
    derived: Vec<Vec<f64>>,
    derived_valid: bool,
    last_timestamp: i64,
}

impl Compressor {
    fn new(modes: Vec<Derive>, interval: i64) -> Self {
        Compressor {
            modes,
            meta_interval: interval,
            last_layout: None,
            next_layout: Vec::new(),
            meta_reset: true,
            last_data: Vec::new(),
            derived: Vec::new(),
            derived_valid: false,
            last_timestamp: 0,
        }
    }

    /// A new `meta` was sent with this layout.
    fn meta(&mut self, layout: Vec<Option<Vec<String>>>) {
        self.derived = layout
            .iter()
            .map(|l| vec![f64::NAN; l.as_ref().map_or(1, Vec::len)])
            .collect();
        self.derived_valid = false;
        if self.last_layout.is_none() {
            self.meta_reset = true;
        }
        self.next_layout = layout;
    }

    fn find_last_instance(&self, metric: usize, instance: usize) -> Option<usize> {
        if self.meta_reset {
            return None;
        }
        let last = self.last_layout.as_ref()?;
        if *last == self.next_layout {
            return Some(instance);
        }
        let last = last.get(metric)?.as_ref()?;
        let next = self.next_layout.get(metric)?.as_ref()?;
        let name = next.get(instance)?;
        last.iter().position(|n| n == name)
    }

    /// Build the data message for `data` (laid out as the last `meta`) sampled at `timestamp`.
    fn data(&mut self, mut data: Vec<Vec<f64>>, timestamp: i64) -> Vec<Out> {
        let mut ratio = 1.0;
        let mut timestamp = timestamp;
        if !self.meta_reset {
            let interval = (timestamp - self.last_timestamp) as f64;
            if interval > 0.0 {
                ratio = self.meta_interval as f64 / interval;
                timestamp = self.last_timestamp + self.meta_interval;
            }
        }
        let span = (timestamp - self.last_timestamp) as f64;

        let mut output = Vec::new();
        for m in 0..data.len() {
            let instanced = self.next_layout.get(m).is_some_and(Option::is_some);
            if instanced {
                let mut res = Vec::new();
                for i in 0..data[m].len() {
                    let last = self.find_last_instance(m, i);
                    if let Some(node) = self.compute(&mut data, ratio, span, m, i, last) {
                        push_at(&mut res, i, node);
                    }
                }
                push_at(&mut output, m, Out::Array(res));
            } else {
                let last = (!self.meta_reset).then_some(0);
                if let Some(node) = self.compute(&mut data, ratio, span, m, 0, last) {
                    push_at(&mut output, m, node);
                }
            }
        }

        self.last_data = data;
        self.last_layout = Some(self.next_layout.clone());
        self.derived_valid = true;
        self.last_timestamp = timestamp;
        self.meta_reset = false;
        output
    }

    fn compute(
        &mut self,
        data: &mut [Vec<f64>],
        ratio: f64,
        span: f64,
        m: usize,
        i: usize,
        last: Option<usize>,
    ) -> Option<Out> {
        let mut val = data[m][i];
        match last.and_then(|l| self.last_data.get(m)?.get(l).copied()) {
            Some(last_val) => {
                if !last_val.is_nan() {
                    val = last_val * (1.0 - ratio) + val * ratio;
                    data[m][i] = val;
                }
                match self.modes[m] {
                    Derive::Delta => val -= last_val,
                    Derive::Rate => val = (val - last_val) / span * 1000.0,
                    Derive::None => {}
                }
            }
            None => {
                if self.modes[m] != Derive::None {
                    val = f64::NAN;
                }
            }
        }
        let unchanged = last == Some(i)
            && self.derived_valid
            && self.derived.get(m).and_then(|d| d.get(i)) == Some(&val);
        if unchanged {
            return None;
        }
        if let Some(slot) = self.derived.get_mut(m).and_then(|d| d.get_mut(i)) {
            *slot = val;
        }
        Some(if val.is_finite() {
            Out::Num(val)
        } else {
            Out::False
        })
    }
}

/// A number: integral values as integers (as the reference writes them), others in the
/// shortest form that reads back as the same double.
fn fmt_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9_223_372_036_854_775_808.0 {
        (v as i64).to_string()
    } else {
        serde_json::to_string(&v).unwrap_or_else(|_| "false".into())
    }
}

fn write_out(out: &Out, buf: &mut String) {
    match out {
        Out::Null => buf.push_str("null"),
        Out::False => buf.push_str("false"),
        Out::Num(v) => buf.push_str(&fmt_number(*v)),
        Out::Array(items) => {
            buf.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    buf.push(',');
                }
                write_out(item, buf);
            }
            buf.push(']');
        }
    }
}

/// The data message: one point in time.
fn data_message(sample: Vec<Out>) -> Bytes {
    let mut buf = String::from("[");
    write_out(&Out::Array(sample), &mut buf);
    buf.push(']');
    Bytes::from(buf)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn protocol_error(message: impl Into<String>) -> ChannelError {
    ChannelError::new(problem::PROTOCOL_ERROR).message(message)
}

/// The options of an `open`, checked in the reference's order.
fn parse_options(open: &Map<String, Value>) -> Result<(Sampling, Vec<Derive>, i64), ChannelError> {
    if open.get("source").and_then(Value::as_str) != Some("internal") {
        // With a message, as Cockpit 337 closes it.
        return Err(ChannelError::new(problem::NOT_SUPPORTED)
            .message("metrics1: only the \"internal\" source is supported"));
    }
    let omit = match open.get("omit-instances") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                protocol_error("invalid \"omit-instances\" option (not an array of strings)")
            })?,
        Some(_) => {
            return Err(protocol_error(
                "invalid \"omit-instances\" option (not an array of strings)",
            ))
        }
    };
    let requested: &[Value] = match open.get("metrics") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(protocol_error(
                "invalid \"metrics\" option was specified (not an array)",
            ))
        }
    };
    let mut metrics = Vec::new();
    let mut samplers = 0;
    for (index, item) in requested.iter().enumerate() {
        let Value::Object(obj) = item else {
            return Err(protocol_error(format!(
                "invalid \"metrics\" option was specified (not an object for metric {index})"
            )));
        };
        let Some(name) = obj.get("name").and_then(Value::as_str) else {
            return Err(protocol_error(format!(
                "invalid \"metrics\" option was specified (no name for metric {index})"
            )));
        };
        let units = match obj.get("units") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => Some(u.as_str()),
            Some(_) => {
                return Err(protocol_error(format!(
                    "invalid units for metric {name} (not a string)"
                )))
            }
        };
        let derive = match obj.get("derive") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(_) => {
                return Err(protocol_error(format!(
                    "invalid derivation mode for metric {name} (not a string)"
                )))
            }
        };
        let Some(desc) = DESCS.iter().find(|d| d.name == name) else {
            return Err(ChannelError::new(problem::NOT_SUPPORTED)
                .message(format!("metrics1: unknown internal metric {name}")));
        };
        if let Some(units) = units {
            if units != desc.units {
                return Err(protocol_error(format!(
                    "{name} has units {}, not {units}",
                    desc.units
                )));
            }
        }
        samplers |= desc.sampler;
        metrics.push(Metric {
            desc,
            derive,
            instances: Vec::new(),
            value: f64::NAN,
        });
    }
    let interval = match open.get("interval") {
        None | Some(Value::Null) => 1000,
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(i64::MAX),
        Some(_) => return Err(protocol_error("invalid \"interval\" option")),
    };
    if interval <= 0 || interval > i64::from(i32::MAX) {
        return Err(protocol_error(format!(
            "invalid \"interval\" value: {interval}"
        )));
    }
    let modes = metrics
        .iter()
        .map(|m| match m.derive.as_deref() {
            None => Ok(Derive::None),
            Some("delta") => Ok(Derive::Delta),
            Some("rate") => Ok(Derive::Rate),
            Some(other) => Err(protocol_error(format!(
                "unsupported derive function: {other}"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sampling = Sampling {
        metrics,
        omit,
        samplers,
        need_meta: true,
        sensors: None,
    };
    Ok((sampling, modes, interval))
}

pub async fn run(ch: &mut Channel) -> ChannelResult {
    let (mut sampling, modes, interval) = parse_options(&ch.open.fields)?;
    let mut compressor = Compressor::new(modes, interval);
    let period = Duration::from_millis(interval as u64);
    let mut next = Instant::now();
    // `ready` before any data, as Cockpit 337 does (cockpit-bridge 287 sent the first meta and
    // sample before it; a data frame before `ready` breaks the protocol's order).
    ch.ready(Map::new()).await;
    loop {
        sampling.sample_all();
        let now = now_ms();
        if sampling.need_meta {
            sampling.need_meta = false;
            compressor.meta(sampling.layout());
            if !ch.send_data(sampling.meta(interval, now)).await {
                return Ok(Map::new());
            }
        }
        let sample = compressor.data(sampling.values(), now);
        if !ch.send_data(data_message(sample)).await {
            return Ok(Map::new());
        }
        next += period;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                input = ch.recv() => match input {
                    Some(Input::Data(_)) => {
                        return Err(protocol_error("received unexpected metrics1 payload"));
                    }
                    Some(_) => {}
                    None => return Ok(Map::new()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(out: Vec<Out>) -> String {
        String::from_utf8(data_message(out).to_vec()).unwrap()
    }

    #[test]
    fn numbers_read_back_exactly() {
        assert_eq!(fmt_number(773525504.0), "773525504");
        assert_eq!(fmt_number(0.0), "0");
        assert_eq!(fmt_number(-28950528.0), "-28950528");
        assert_eq!(fmt_number(0.5), "0.5");
        assert_eq!(fmt_number(9223372036854771712.0), "9223372036854771712");
        for v in [
            19.960079840326216,
            7.952190935611725e-5,
            1e19,
            392_761_458.459_081_8,
        ] {
            assert_eq!(fmt_number(v).parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn first_sample_has_false_for_derived_then_compresses() {
        let mut c = Compressor::new(vec![Derive::Rate, Derive::None, Derive::None], 1000);
        c.meta(vec![None, None, Some(vec!["a".into(), "b".into()])]);
        let s1 = c.data(vec![vec![1000.0], vec![5.0], vec![1.0, 2.0]], 10_000);
        assert_eq!(text(s1), "[[false,5,[1,2]]]");
        // Exactly one interval later: no interpolation.
        let s2 = c.data(vec![vec![1500.0], vec![5.0], vec![1.0, 3.0]], 11_000);
        assert_eq!(text(s2), "[[500,null,[null,3]]]");
        let s3 = c.data(vec![vec![2000.0], vec![5.0], vec![1.0, 3.0]], 12_000);
        // Same rate and values: everything compressed, trailing nulls dropped.
        assert_eq!(text(s3), "[[null,null,[]]]");
    }

    #[test]
    fn late_samples_are_interpolated_onto_the_grid() {
        let mut c = Compressor::new(vec![Derive::None], 1000);
        c.meta(vec![None]);
        c.data(vec![vec![100.0]], 10_000);
        // 2000 ms later with value 300: at 1000 ms the line gives 200.
        let s = c.data(vec![vec![300.0]], 12_000);
        assert_eq!(text(s), "[[200]]");
        assert_eq!(c.last_timestamp, 11_000);
    }

    #[test]
    fn new_instances_map_by_name() {
        let mut c = Compressor::new(vec![Derive::Delta], 1000);
        c.meta(vec![Some(vec!["a".into()])]);
        c.data(vec![vec![10.0]], 1_000);
        c.meta(vec![Some(vec!["b".into(), "a".into()])]);
        let s = c.data(vec![vec![7.0, 15.0]], 2_000);
        // "b" is new: no previous value; "a" moved from index 0 to 1 and keeps its delta.
        assert_eq!(text(s), "[[[false,5]]]");
    }

    #[test]
    fn options_are_checked_like_the_reference() {
        let o = |v: Value| v.as_object().unwrap().clone();
        let err = |v: Value| parse_options(&o(v)).err().unwrap();
        let e = err(json!({"metrics": [{"name": "memory.used"}]}));
        assert_eq!(e.problem, problem::NOT_SUPPORTED);
        let e = err(json!({"source": "internal", "metrics": [{"name": "nope"}]}));
        assert_eq!(
            (e.problem.as_str(), e.message.as_deref()),
            (
                problem::NOT_SUPPORTED,
                Some("metrics1: unknown internal metric nope")
            )
        );
        let e = err(json!({"source": "internal", "metrics": ["memory.used"]}));
        assert_eq!(
            e.message.as_deref(),
            Some("invalid \"metrics\" option was specified (not an object for metric 0)")
        );
        let e =
            err(json!({"source": "internal", "metrics": [{"name": "memory.used", "units": "kb"}]}));
        assert_eq!(
            e.message.as_deref(),
            Some("memory.used has units bytes, not kb")
        );
        let e = err(json!({"source": "internal", "metrics": [], "interval": 0}));
        assert_eq!(e.message.as_deref(), Some("invalid \"interval\" value: 0"));
        let e = err(json!({"source": "internal", "interval": "x"}));
        assert_eq!(e.message.as_deref(), Some("invalid \"interval\" option"));
        let e = err(
            json!({"source": "internal", "metrics": [{"name": "memory.used", "derive": "foo"}]}),
        );
        assert_eq!(
            e.message.as_deref(),
            Some("unsupported derive function: foo")
        );
        let e = err(json!({"source": "internal", "omit-instances": "lo"}));
        assert_eq!(e.problem, problem::PROTOCOL_ERROR);
        let (s, modes, interval) = parse_options(&o(json!({"source": "internal",
            "metrics": [{"name": "cpu.core.user", "derive": "rate"}], "interval": 1.5})))
        .unwrap();
        assert_eq!((modes, interval), (vec![Derive::Rate], 1));
        assert_eq!(s.samplers, CPU);
    }

    #[test]
    fn sampling_tracks_instances_and_omits() {
        let (mut s, _, _) = parse_options(
            json!({"source": "internal", "omit-instances": ["lo"],
                   "metrics": [{"name": "network.interface.rx"}, {"name": "network.all.rx"}]})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        s.sample("network.interface.rx", Some("lo"), 1);
        s.sample("network.interface.rx", Some("eth0"), 2);
        s.sample("network.all.rx", None, 3);
        assert_eq!(s.layout(), vec![Some(vec!["eth0".to_owned()]), None]);
        assert_eq!(s.values(), vec![vec![2.0], vec![3.0]]);
        let meta: Value = serde_json::from_slice(&s.meta(1000, 5)).unwrap();
        assert_eq!(meta["metrics"][0]["instances"], json!(["eth0"]));
        assert_eq!(meta["metrics"][1]["units"], "bytes");
        assert_eq!(meta["timestamp"], 5);
        assert!(meta["metrics"][1].get("instances").is_none());
    }
}
