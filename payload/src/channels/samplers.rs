//! The internal metric samplers of `metrics1`: each reads one kernel interface (`/proc/stat`,
//! `/proc/meminfo`, `/proc/diskstats`, `/proc/net/dev`, `/proc/mounts`, cgroupfs, hwmon) and
//! reports `(metric, instance, value)` samples, as the reference bridge's samplers do.

use std::path::Path;

/// Receives samples. `instance` is `None` for metrics without instances.
pub trait Sink {
    fn sample(&mut self, metric: &str, instance: Option<&str>, value: i64);
}

/// `/proc/stat`: `cpu.basic.*` (all CPUs) and `cpu.core.*` (per CPU), in milliseconds.
pub fn cpu(sink: &mut dyn Sink) {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return;
    };
    cpu_from(&text, user_hz(), sink);
}

fn user_hz() -> u64 {
    // SAFETY: plain library call without pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        100
    } else {
        hz as u64
    }
}

pub fn cpu_from(text: &str, hz: u64, sink: &mut dyn Sink) {
    for line in text.lines().filter(|l| l.starts_with("cpu")) {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next() else { continue };
        let nums: Vec<u64> = fields.take(5).map_while(|f| f.parse().ok()).collect();
        let [user, nice, system, _idle, iowait] = nums[..] else {
            continue;
        };
        let ms = |v: u64| (v.saturating_mul(1000) / hz) as i64;
        // The reference reads at most 8 characters of the name.
        let name: String = name.chars().take(8).collect();
        if name.len() > 3 {
            let core = &name[3..];
            sink.sample("cpu.core.nice", Some(core), ms(nice));
            sink.sample("cpu.core.user", Some(core), ms(user));
            sink.sample("cpu.core.system", Some(core), ms(system));
            sink.sample("cpu.core.iowait", Some(core), ms(iowait));
        } else {
            sink.sample("cpu.basic.nice", None, ms(nice));
            sink.sample("cpu.basic.user", None, ms(user));
            sink.sample("cpu.basic.system", None, ms(system));
            sink.sample("cpu.basic.iowait", None, ms(iowait));
        }
    }
}

/// `/proc/meminfo`: `memory.*` in bytes.
pub fn memory(sink: &mut dyn Sink) {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        return;
    };
    memory_from(&text, sink);
}

pub fn memory_from(text: &str, sink: &mut dyn Sink) {
    let (mut total, mut free, mut buffers, mut cached, mut available) = (0u64, 0, 0, 0, 0);
    let (mut swap_total, mut swap_free) = (0u64, 0u64);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let value = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        match key {
            "MemTotal" => total = value,
            "MemFree" => free = value,
            "SwapTotal" => swap_total = value,
            "SwapFree" => swap_free = value,
            "Buffers" => buffers = value,
            "Cached" => cached = value,
            "MemAvailable" => available = value,
            _ => {}
        }
    }
    let bytes = |kb: u64| kb.wrapping_mul(1024) as i64;
    sink.sample("memory.free", None, bytes(free));
    sink.sample("memory.used", None, bytes(total.wrapping_sub(available)));
    sink.sample("memory.cached", None, bytes(buffers + cached));
    sink.sample(
        "memory.swap-used",
        None,
        bytes(swap_total.wrapping_sub(swap_free)),
    );
}

/// One line of `/proc/diskstats`: major, name, sectors read, sectors written.
fn diskstats_line(line: &str) -> Option<(u32, &str, u64, u64)> {
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    if f.len() < 14 {
        return None;
    }
    let major: u32 = f[0].parse().ok()?;
    let _minor: u32 = f[1].parse().ok()?;
    let nums: Vec<u64> = f[3..14]
        .iter()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    Some((major, f[2], nums[2], nums[6]))
}

/// `/proc/diskstats`: `block.device.*` for every device, in bytes.
pub fn block(sink: &mut dyn Sink) {
    let Ok(text) = std::fs::read_to_string("/proc/diskstats") else {
        return;
    };
    block_from(&text, sink);
}

pub fn block_from(text: &str, sink: &mut dyn Sink) {
    for (_, name, read, written) in text.lines().filter_map(diskstats_line) {
        sink.sample("block.device.read", Some(name), (read * 512) as i64);
        sink.sample("block.device.written", Some(name), (written * 512) as i64);
    }
}

/// `/proc/diskstats`: `disk.dev.*` per whole disk and `disk.all.*`, skipping partitions,
/// device-mapper and md devices (their I/O is counted on the disks below them).
pub fn disk(sink: &mut dyn Sink) {
    let Ok(text) = std::fs::read_to_string("/proc/diskstats") else {
        return;
    };
    disk_from(&text, sink);
}

pub fn disk_from(text: &str, sink: &mut dyn Sink) {
    let (mut all_read, mut all_written) = (0i64, 0i64);
    for (major, name, read, written) in text.lines().filter_map(diskstats_line) {
        if major == 253 || major == 9 {
            continue;
        }
        let classic = name.starts_with("sd") || name.starts_with("hd") || name.starts_with("vd");
        if classic && name.ends_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        if name.starts_with("nvme") && name.contains('p') {
            continue;
        }
        let (read, written) = ((read * 512) as i64, (written * 512) as i64);
        all_read = all_read.wrapping_add(read);
        all_written = all_written.wrapping_add(written);
        sink.sample("disk.dev.read", Some(name), read);
        sink.sample("disk.dev.written", Some(name), written);
    }
    sink.sample("disk.all.read", None, all_read);
    sink.sample("disk.all.written", None, all_written);
}

/// `/proc/net/dev`: `network.interface.*` per interface and `network.all.*`, in bytes.
pub fn network(sink: &mut dyn Sink) {
    let Ok(text) = std::fs::read_to_string("/proc/net/dev") else {
        return;
    };
    network_from(&text, sink);
}

pub fn network_from(text: &str, sink: &mut dyn Sink) {
    let (mut all_rx, mut all_tx) = (0i64, 0i64);
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let nums: Vec<u64> = rest
            .split_ascii_whitespace()
            .map_while(|v| v.parse().ok())
            .collect();
        if nums.len() < 16 {
            continue;
        }
        let name = name.trim();
        let (rx, tx) = (nums[0] as i64, nums[8] as i64);
        sink.sample("network.interface.rx", Some(name), rx);
        sink.sample("network.interface.tx", Some(name), tx);
        all_rx = all_rx.wrapping_add(rx);
        all_tx = all_tx.wrapping_add(tx);
    }
    sink.sample("network.all.rx", None, all_rx);
    sink.sample("network.all.tx", None, all_tx);
}

/// `/proc/mounts` and statvfs: `mount.total` and `mount.used` per mount point of a real
/// device (a source starting with `/`), in bytes.
pub fn mounts(sink: &mut dyn Sink) {
    let Ok(text) = std::fs::read_to_string("/proc/mounts") else {
        return;
    };
    for dir in mount_points(&text) {
        if let Some((total, used)) = statvfs(&dir) {
            sink.sample("mount.total", Some(&dir), total);
            sink.sample("mount.used", Some(&dir), used);
        }
    }
}

/// The mount points of real devices, with `\040`-style escapes resolved.
pub fn mount_points(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('/'))
        .filter_map(|l| l.split_ascii_whitespace().nth(1))
        .map(unescape_octal)
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn statvfs(dir: &str) -> Option<(i64, i64)> {
    let cdir = std::ffi::CString::new(dir).ok()?;
    // SAFETY: an all-zero statvfs is a valid value for the call to fill in.
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `cdir` is NUL-terminated and `buf` is valid for writes.
    if unsafe { libc::statvfs(cdir.as_ptr(), &mut buf) } < 0 {
        return None;
    }
    let frsize = buf.f_frsize as u64;
    let total = frsize.wrapping_mul(buf.f_blocks as u64);
    let free = frsize.wrapping_mul(buf.f_bfree as u64);
    Some((total as i64, total.wrapping_sub(free) as i64))
}

/// cgroupfs: `cgroup.memory.*` and `cgroup.cpu.*` per control group (named by its path below
/// the hierarchy's root; the root itself is `""`), for cgroup v2 or v1.
pub fn cgroups(sink: &mut dyn Sink) {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        walk("/sys/fs/cgroup", &mut |dir, name| {
            cgroup_v2(dir, name, sink)
        });
    } else {
        walk("/sys/fs/cgroup/memory", &mut |dir, name| {
            cgroup_v1_memory(dir, name, sink)
        });
        walk("/sys/fs/cgroup/cpuacct", &mut |dir, name| {
            cgroup_v1_cpu(dir, name, sink)
        });
    }
}

/// Visit `root` and every directory below it, parents first.
fn walk(root: &str, visit: &mut dyn FnMut(&Path, &str)) {
    let root_path = Path::new(root);
    if !root_path.is_dir() {
        return;
    }
    let mut stack = vec![root_path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let name = dir
            .strip_prefix(root_path)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        visit(&dir, &name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut subdirs: Vec<_> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        subdirs.reverse();
        stack.extend(subdirs);
    }
}

/// A cgroup file with one number; `max` is unlimited.
fn read_number(dir: &Path, file: &str) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    parse_number(&text)
}

pub fn parse_number(text: &str) -> Option<i64> {
    let word = text.split_ascii_whitespace().next()?;
    if word == "max" {
        return Some(i64::MAX);
    }
    word.parse::<i64>().ok()
}

fn cgroup_v1_memory(dir: &Path, name: &str, sink: &mut dyn Sink) {
    let files = [
        ("cgroup.memory.usage", "memory.usage_in_bytes"),
        ("cgroup.memory.limit", "memory.limit_in_bytes"),
        ("cgroup.memory.sw-usage", "memory.memsw.usage_in_bytes"),
        ("cgroup.memory.sw-limit", "memory.memsw.limit_in_bytes"),
    ];
    for (metric, file) in files {
        if let Some(v) = read_number(dir, file) {
            sink.sample(metric, Some(name), v);
        }
    }
}

fn cgroup_v1_cpu(dir: &Path, name: &str, sink: &mut dyn Sink) {
    if let Some(ns) = read_number(dir, "cpuacct.usage") {
        sink.sample("cgroup.cpu.usage", Some(name), ns / 1_000_000);
    }
    if let Some(shares) = read_number(dir, "cpu.shares") {
        sink.sample("cgroup.cpu.shares", Some(name), shares);
    }
}

fn cgroup_v2(dir: &Path, name: &str, sink: &mut dyn Sink) {
    let usage = read_number(dir, "memory.current");
    if let Some(usage) = usage {
        sink.sample("cgroup.memory.usage", Some(name), usage);
        if let Some(swap) = read_number(dir, "memory.swap.current") {
            sink.sample(
                "cgroup.memory.sw-usage",
                Some(name),
                usage.saturating_add(swap),
            );
        }
    }
    if let Some(limit) = read_number(dir, "memory.max") {
        sink.sample("cgroup.memory.limit", Some(name), limit);
    }
    if let Some(limit) = read_number(dir, "memory.swap.max") {
        sink.sample("cgroup.memory.sw-limit", Some(name), limit);
    }
    if let Ok(stat) = std::fs::read_to_string(dir.join("cpu.stat")) {
        let usec = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<i64>().ok());
        if let Some(usec) = usec {
            sink.sample("cgroup.cpu.usage", Some(name), usec / 1000);
        }
    }
    if let Some(weight) = read_number(dir, "cpu.weight") {
        sink.sample("cgroup.cpu.shares", Some(name), weight);
    }
}

/// hwmon: `cpu.temperature` per CPU sensor (named by its input file), in degrees Celsius.
pub fn cpu_temperature(sensors: &[String], sink: &mut dyn Sink) {
    for path in sensors {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let Ok(milli) = text.trim().parse::<i64>() else {
            continue;
        };
        if milli == 0 || milli == i64::MAX || milli == i64::MIN {
            continue;
        }
        sink.sample("cpu.temperature", Some(path), milli / 1000);
    }
}

/// The CPU temperature inputs under `/sys/class/hwmon` (Intel coretemp, AMD k8temp/k10temp,
/// ARM cpu_thermal, Asus atk0110 "CPU Temperature"; AMD's Tctl is skipped).
pub fn find_cpu_sensors() -> Vec<String> {
    let mut sensors = Vec::new();
    for i in 0.. {
        let base = format!("/sys/class/hwmon/hwmon{i}");
        let Ok(name) = std::fs::read_to_string(format!("{base}/name")) else {
            break;
        };
        let name = name.trim_end();
        if !matches!(
            name,
            "coretemp" | "cpu_thermal" | "k8temp" | "k10temp" | "atk0110"
        ) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(n) = file
                .strip_prefix("temp")
                .and_then(|r| r.strip_suffix("_input"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            match std::fs::read_to_string(format!("{base}/temp{n}_label")) {
                Err(_) if name != "cpu_thermal" => continue,
                Err(_) => {}
                Ok(label) => {
                    let label = label.trim_end();
                    if name == "atk0110" && label != "CPU Temperature" {
                        continue;
                    }
                    if label == "Tctl" {
                        continue;
                    }
                }
            }
            sensors.push(format!("{base}/{file}"));
        }
    }
    sensors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<(String, Option<String>, i64)>);

    impl Sink for Collect {
        fn sample(&mut self, metric: &str, instance: Option<&str>, value: i64) {
            self.0
                .push((metric.to_owned(), instance.map(str::to_owned), value));
        }
    }

    impl Collect {
        fn get(&self, metric: &str, instance: Option<&str>) -> Option<i64> {
            self.0
                .iter()
                .find(|(m, i, _)| m == metric && i.as_deref() == instance)
                .map(|s| s.2)
        }
    }

    #[test]
    fn cpu_lines() {
        let text =
            "cpu  100 2 30 400 5 0 0 0 0 0\ncpu0 50 1 15 200 3 0 0\ncpu1 50 1 15\nintr 1 2 3\n";
        let mut c = Collect::default();
        cpu_from(text, 100, &mut c);
        assert_eq!(c.get("cpu.basic.user", None), Some(1000));
        assert_eq!(c.get("cpu.basic.nice", None), Some(20));
        assert_eq!(c.get("cpu.basic.system", None), Some(300));
        assert_eq!(c.get("cpu.basic.iowait", None), Some(50));
        assert_eq!(c.get("cpu.core.user", Some("0")), Some(500));
        assert_eq!(c.get("cpu.core.iowait", Some("0")), Some(30));
        // Too short a line is skipped.
        assert_eq!(c.get("cpu.core.user", Some("1")), None);
    }

    #[test]
    fn memory_lines() {
        let text = "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 600 kB\nBuffers: 10 kB\nCached: 90 kB\nSwapCached: 5 kB\nSwapTotal: 50 kB\nSwapFree: 20 kB\n";
        let mut c = Collect::default();
        memory_from(text, &mut c);
        assert_eq!(c.get("memory.free", None), Some(200 * 1024));
        assert_eq!(c.get("memory.used", None), Some(400 * 1024));
        assert_eq!(c.get("memory.cached", None), Some(100 * 1024));
        assert_eq!(c.get("memory.swap-used", None), Some(30 * 1024));
    }

    const DISKSTATS: &str = "   7       0 loop0 0 0 4 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 66768 8809 100 193571 19818 37366 200 125623 0 39132 324902 11933 57
 254       1 vda1 1 1 50 1 1 1 60 1 0 1 1
 253       0 dm-0 0 0 7 0 0 0 9 0 0 0 0
   8       0 sda 1 1 10 1 1 1 20 1 0 1 1
   8       1 sda1 1 1 10 1 1 1 20 1 0 1 1
 259       0 nvme0n1 1 1 1 1 1 1 1 1 0 1 1
 259       1 nvme0n1p1 1 1 1 1 1 1 1 1 0 1 1
";

    #[test]
    fn block_counts_every_device() {
        let mut c = Collect::default();
        block_from(DISKSTATS, &mut c);
        assert_eq!(c.get("block.device.read", Some("vda")), Some(100 * 512));
        assert_eq!(c.get("block.device.written", Some("vda")), Some(200 * 512));
        assert_eq!(c.get("block.device.read", Some("dm-0")), Some(7 * 512));
        assert_eq!(c.get("block.device.read", Some("vda1")), Some(50 * 512));
    }

    #[test]
    fn disk_skips_partitions_and_mapped_devices() {
        let mut c = Collect::default();
        disk_from(DISKSTATS, &mut c);
        let devices: Vec<_> =
            c.0.iter()
                .filter(|s| s.0 == "disk.dev.read")
                .map(|s| s.1.clone().unwrap())
                .collect();
        assert_eq!(devices, ["loop0", "vda", "sda", "nvme0n1"]);
        assert_eq!(c.get("disk.all.read", None), Some((4 + 100 + 10 + 1) * 512));
        assert_eq!(c.get("disk.all.written", None), Some((200 + 20 + 1) * 512));
    }

    #[test]
    fn network_lines() {
        let text = "Inter-|   Receive  |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 2776770   11307    0    0    0     0          0         0  2776770   11307    0    0    0     0       0          0\n  eth0: 1215645    2751    0    0    0     0          0         0  1782404    4324    0    0    0   427       0          0\n";
        let mut c = Collect::default();
        network_from(text, &mut c);
        assert_eq!(c.get("network.interface.rx", Some("eth0")), Some(1215645));
        assert_eq!(c.get("network.interface.tx", Some("lo")), Some(2776770));
        assert_eq!(c.get("network.all.rx", None), Some(2776770 + 1215645));
        assert_eq!(c.get("network.all.tx", None), Some(2776770 + 1782404));
    }

    #[test]
    fn mount_points_of_devices() {
        let text = "proc /proc proc rw 0 0\n/dev/vda1 / ext4 rw 0 0\n/dev/sdb1 /mnt/my\\040disk ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n";
        assert_eq!(mount_points(text), ["/", "/mnt/my disk"]);
        let mut c = Collect::default();
        mounts(&mut c);
        if let Some(total) = c.get("mount.total", Some("/")) {
            assert!(total > 0);
            assert!(c.get("mount.used", Some("/")).unwrap() <= total);
        }
    }

    #[test]
    fn cgroup_numbers() {
        assert_eq!(parse_number("max\n"), Some(i64::MAX));
        assert_eq!(
            parse_number("9223372036854771712\n"),
            Some(9223372036854771712)
        );
        assert_eq!(parse_number("12\n"), Some(12));
        assert_eq!(parse_number(""), None);
    }

    #[test]
    fn live_cpu_and_memory() {
        let mut c = Collect::default();
        cpu(&mut c);
        memory(&mut c);
        assert!(c.get("cpu.basic.user", None).is_some());
        assert!(c.get("memory.used", None).unwrap() > 0);
    }
}
