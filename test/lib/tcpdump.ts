// Captures on lab links, read back: the tcpdump flags whose output parseTcpdump understands
// (test/netns/dsr, test/e2e/northsouth: which host sent a reply, by MAC).

/** One line of `tcpdump -t -nn -e`: MACs, addresses and ports, the rest as text. */
export interface CapturedFrame {
  srcMac: string;
  dstMac: string;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /** Ethernet frame length. */
  length: number;
  rest: string;
}

/** tcpdump's arguments for IPv4 and IPv6 on `dev`: line-buffered, numeric, link-level headers. */
export function tcpdumpArgs(dev: string): string[] {
  return ['-i', dev, '-t', '-nn', '-e', '-l', '-U', 'ip or ip6'];
}

/** The frames with ports (TCP, UDP) of tcpdumpArgs() output; other lines are skipped. */
export function parseTcpdump(text: string): CapturedFrame[] {
  const out: CapturedFrame[] = [];
  const re = /^([0-9a-f:]{17}) > ([0-9a-f:]{17}), ethertype IPv[46] \(0x[0-9a-f]+\), length (\d+): (\S+)\.(\d+) > (\S+)\.(\d+): (.*)$/;
  for (const line of text.split('\n')) {
    const m = re.exec(line);
    if (!m) continue;
    out.push({ srcMac: m[1]!, dstMac: m[2]!, length: Number(m[3]), src: m[4]!, sport: Number(m[5]), dst: m[6]!, dport: Number(m[7]), rest: m[8]! });
  }
  return out;
}
