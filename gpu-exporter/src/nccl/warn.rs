//! `NCCL WARN` lines from `NCCL_DEBUG=WARN` (or INFO) logs, counted by kind. A run of network
//! warnings on one node is often the first sign of a flapping link before any collective fails.

/// The kind of an `NCCL WARN` line, or `None` for any other line.
///
/// Lines look like `host:pid:tid [rank] NCCL WARN NET/IB : Got completion from peer … with status=12`.
pub fn classify(line: &str) -> Option<&'static str> {
    let (_, message) = line.split_once("NCCL WARN")?;
    let message = message.trim();
    let lower = message.to_ascii_lowercase();
    let kind = if message.starts_with("NET/IB") || lower.contains("ibv_") {
        "net_ib"
    } else if message.starts_with("NET/Socket") || lower.contains("socket") {
        "net_socket"
    } else if lower.contains("timeout") || lower.contains("timed out") {
        "timeout"
    } else if lower.contains("cuda") {
        "cuda"
    } else if lower.contains("proxy") || lower.contains("service thread") {
        "proxy"
    } else if lower.contains("connection") || lower.contains("connect") {
        "connection"
    } else if lower.contains("nvls") || lower.contains("nvlink") {
        "nvlink"
    } else {
        "other"
    };
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn classifies_real_warn_lines() {
        let cases = [
            (
                "gpu-node-3:2719:2801 [5] NCCL WARN NET/IB : Got completion from peer 10.10.1.7<54061> with status=12 opcode=0 len=0 vendor err 129 (Recv) localGid ::ffff:10.10.1.3 remoteGidsfe80::",
                "net_ib",
            ),
            (
                "gpu-node-3:2719:2719 [0] NCCL WARN Call to ibv_reg_mr failed with error Cannot allocate memory",
                "net_ib",
            ),
            (
                "node1:88:120 [1] NCCL WARN socketProgressOpt: Call to recv from 10.0.0.2<35545> failed : Connection reset by peer",
                "net_socket",
            ),
            (
                "node1:88:88 [1] NCCL WARN Cuda failure 'out of memory'",
                "cuda",
            ),
            (
                "node1:88:140 [2] NCCL WARN [Service thread] Error encountered progressing operation=Connect, res=3, closing connection",
                "proxy",
            ),
            (
                "node1:88:140 [2] NCCL WARN Watchdog: Timeout waiting for peer",
                "timeout",
            ),
            (
                "node1:88:140 [2] NCCL WARN Unknown environment variable NCCL_FOO",
                "other",
            ),
        ];
        for (line, kind) in cases {
            assert_eq!(classify(line), Some(kind), "{line}");
        }
        assert_eq!(
            classify("node1:88:88 [0] NCCL INFO Bootstrap : Using eth0:10.0.0.1<0>"),
            None
        );
    }
}
