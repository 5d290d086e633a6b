#!/usr/bin/env node
// js-libp2p peer for aiop2p's circuit relay v2 interop tests, driven over JSON lines like
// peer.mjs (one `ready` line, then one answer per command `{id, cmd, ...}`); logs go to stderr.
//
// Arguments:
//   --relay                 act as a circuit relay v2 server (off otherwise)
//   --duration-ms N         relay: circuit duration limit (js enforces it in ms)
//   --data-bytes N          relay: circuit data limit in bytes
//   --listen ADDR           repeatable; `<relay-addr>/p2p/<relay>/p2p-circuit` listens via a relay
//   --echo-once             the echo handler answers one message per stream, then closes (as
//                           peer.mjs does; bench/run.py's relay figures use it)
// Every role can dial circuit addresses and serves the echo protocol on limited connections.
// Commands: echo {addr, data_b64} -> {data_b64}; ping {addr} -> {rtt_ms}; addrs -> {addrs};
//           bench_echo {addr, count, concurrency, size, warmup} -> {p50_ms, p99_ms, req_per_s,
//             total_s, warmup, relayed} (peer.mjs's semantics; relayed: the connection is
//             limited, i.e. it goes through a relay); quit.

// Node 20 lacks Promise.withResolvers, which libp2p 3.3's dependency tree calls at runtime: define
// it before any libp2p module is evaluated (hence the dynamic imports below).
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createInterface } = await import('node:readline')
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@libp2p/noise')
const { yamux } = await import('@libp2p/yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { circuitRelayServer, circuitRelayTransport } = await import('@libp2p/circuit-relay-v2')
const { lpStream } = await import('@libp2p/utils')
const { performance } = await import('node:perf_hooks')
const { multiaddr } = await import('@multiformats/multiaddr')

const ECHO_PROTOCOL = '/p2p/1.0.0'
const ECHO_MAX_MESSAGE_BYTES = 1024 * 1024
const MAX_STREAMS_PER_PROTOCOL = 1024
const CIRCUIT_ADDR_WAIT_MS = 15_000
const STOP_TIMEOUT_MS = 5_000
const MAX_BENCH_COUNT = 1_000_000
const DEFAULT_ECHO_WARMUP_REQUESTS = 2000 // as in peer.mjs: V8 optimises the hot paths first
const ALLOW_LIST = ['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128']

function log (...parts) {
  process.stderr.write(`[js-relay-peer ${process.pid}] ${parts.join(' ')}\n`)
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function errorMessage (err) {
  if (err == null) return 'unknown error'
  const name = err.name != null && err.name !== 'Error' ? `${err.name}: ` : ''
  return `${name}${err.message ?? String(err)}`
}

function parseArgs (argv) {
  const out = { relay: false, listen: [], durationMs: null, dataBytes: null, echoOnce: false }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--relay') out.relay = true
    else if (arg === '--echo-once') out.echoOnce = true
    else if (arg === '--listen' && i + 1 < argv.length) out.listen.push(argv[++i])
    else if (arg === '--duration-ms' && i + 1 < argv.length) out.durationMs = Number(argv[++i])
    else if (arg === '--data-bytes' && i + 1 < argv.length) out.dataBytes = BigInt(argv[++i])
    else throw new Error(`unknown or incomplete argument: ${arg}`)
  }
  if (out.listen.length === 0 || out.listen.every(a => a.includes('/p2p-circuit'))) {
    out.listen.unshift('/ip4/127.0.0.1/tcp/0')
  }
  return out
}

const args = parseArgs(process.argv.slice(2))
const streamLimits = {
  maxInboundStreams: MAX_STREAMS_PER_PROTOCOL,
  maxOutboundStreams: MAX_STREAMS_PER_PROTOCOL,
  runOnLimitedConnection: true
}

const services = {
  identify: identify({ ...streamLimits }),
  ping: ping({ ...streamLimits })
}
if (args.relay) {
  const reservations = { maxReservations: 128 }
  if (args.durationMs != null || args.dataBytes != null) {
    reservations.applyDefaultLimit = true
    if (args.durationMs != null) reservations.defaultDurationLimit = args.durationMs
    if (args.dataBytes != null) reservations.defaultDataLimit = args.dataBytes
  }
  services.relay = circuitRelayServer({ reservations })
}

const node = await createLibp2p({
  addresses: { listen: args.listen },
  transports: [
    tcp({ inboundSocketInactivityTimeout: 0, outboundSocketInactivityTimeout: 0 }),
    circuitRelayTransport()
  ],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionManager: { allow: ALLOW_LIST, inboundConnectionThreshold: 1000 },
  services
})

function toInt (value, name, min, max) {
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new Error(`${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(value)}`)
  }
  return n
}

/** Linear-interpolation quantile of an ascending array (numpy's default, as in peer.mjs). */
function quantile (sorted, q) {
  if (sorted.length === 0) return null
  const pos = (sorted.length - 1) * q
  const lo = Math.floor(pos)
  const hi = Math.ceil(pos)
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo)
}

await node.handle(ECHO_PROTOCOL, async (stream) => {
  // libp2p 3 passes the stream itself (older versions pass {stream}).
  const s = stream.stream ?? stream
  try {
    const lp = lpStream(s, { maxDataLength: ECHO_MAX_MESSAGE_BYTES })
    if (args.echoOnce) {
      await lp.write(await lp.read())
      await s.close()
      return
    }
    for (;;) {
      let message
      try {
        message = await lp.read()
      } catch {
        break // end of stream
      }
      await lp.write(message)
    }
    await s.close()
  } catch (err) {
    log('echo handler:', errorMessage(err))
    s.abort(err)
  }
}, streamLimits)

/** One request on a new stream, as peer.mjs's echoOnce (the latency includes the close). */
async function echoOnce (connection, payload) {
  const stream = await connection.newStream(ECHO_PROTOCOL, streamLimits)
  try {
    const lp = lpStream(stream, { maxDataLength: ECHO_MAX_MESSAGE_BYTES })
    await lp.write(payload)
    const response = await lp.read()
    await stream.close()
    return response
  } catch (err) {
    stream.abort(err)
    throw err
  }
}

const commands = {
  async echo (cmd) {
    const ma = multiaddr(cmd.addr)
    const stream = await node.dialProtocol(ma, ECHO_PROTOCOL, streamLimits)
    const lp = lpStream(stream, { maxDataLength: ECHO_MAX_MESSAGE_BYTES })
    await lp.write(Buffer.from(cmd.data_b64, 'base64'))
    const answer = await lp.read()
    await stream.close()
    return { data_b64: Buffer.from(answer.subarray()).toString('base64') }
  },
  async ping (cmd) {
    const rtt = await node.services.ping.ping(multiaddr(cmd.addr), { runOnLimitedConnection: true })
    return { rtt_ms: rtt }
  },
  // peer.mjs's bench_echo, able to dial circuit addresses and use limited connections.
  async bench_echo (cmd) {
    const count = toInt(cmd.count ?? 1000, 'count', 1, MAX_BENCH_COUNT)
    const concurrency = toInt(cmd.concurrency ?? 1, 'concurrency', 1, MAX_STREAMS_PER_PROTOCOL)
    const size = toInt(cmd.size ?? 64, 'size', 0, ECHO_MAX_MESSAGE_BYTES)
    const payload = new Uint8Array(size)
    for (let i = 0; i < size; i++) payload[i] = i & 0xff
    const warmup = toInt(cmd.warmup ?? DEFAULT_ECHO_WARMUP_REQUESTS, 'warmup', 0, MAX_BENCH_COUNT)
    const connection = await node.dial(multiaddr(cmd.addr))
    const latencies = new Array(count)
    const run = async (total, record) => {
      let next = 0
      const worker = async () => {
        while (next < total) {
          const index = next++
          const t0 = performance.now()
          const response = await echoOnce(connection, payload)
          if (record) latencies[index] = performance.now() - t0
          if (response.byteLength !== size) {
            throw new Error(`bench_echo: response of ${response.byteLength} bytes, sent ${size}`)
          }
        }
      }
      await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker))
    }
    await run(warmup, false)
    const start = performance.now()
    await run(count, true)
    const totalS = (performance.now() - start) / 1000
    const sorted = latencies.sort((a, b) => a - b)
    return {
      p50_ms: quantile(sorted, 0.5),
      p99_ms: quantile(sorted, 0.99),
      req_per_s: count / totalS,
      total_s: totalS,
      warmup,
      relayed: connection.limits != null || connection.remoteAddr.toString().includes('/p2p-circuit')
    }
  },
  async addrs () {
    return { addrs: node.getMultiaddrs().map(ma => ma.toString()) }
  }
}

let stopping = false
async function shutdown (code) {
  if (stopping) return
  stopping = true
  const timer = setTimeout(() => process.exit(code), STOP_TIMEOUT_MS)
  try { await node.stop() } catch (err) { log('stop:', errorMessage(err)) }
  clearTimeout(timer)
  process.exit(code)
}

async function runCommand (line) {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    emit({ id: null, ok: false, error: `bad JSON: ${errorMessage(err)}` })
    return
  }
  const id = cmd.id ?? null
  if (cmd.cmd === 'quit') {
    emit({ id, ok: true })
    await shutdown(0)
    return
  }
  const handler = Object.hasOwn(commands, cmd.cmd) ? commands[cmd.cmd] : null
  if (handler == null) {
    emit({ id, ok: false, error: `unknown command: ${cmd.cmd}` })
    return
  }
  try {
    emit({ id, ok: true, ...(await handler(cmd)) })
  } catch (err) {
    emit({ id, ok: false, error: errorMessage(err) })
  }
}

process.on('unhandledRejection', (err) => { log('unhandled rejection:', errorMessage(err)) })
process.on('uncaughtException', (err) => { log('uncaught exception:', errorMessage(err)) })
process.stdout.on('error', () => { void shutdown(0) })
process.on('SIGTERM', () => { void shutdown(0) })

await node.start()
// A relayed listener is only useful once its reservation is made: wait for the circuit address.
if (args.listen.some(a => a.includes('/p2p-circuit'))) {
  const deadline = Date.now() + CIRCUIT_ADDR_WAIT_MS
  while (!node.getMultiaddrs().some(ma => ma.toString().includes('/p2p-circuit')) &&
         Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}
emit({
  event: 'ready',
  peerId: node.peerId.toString(),
  addrs: node.getMultiaddrs().map(ma => ma.toString())
})

const input = createInterface({ input: process.stdin, crlfDelay: Infinity })
input.on('line', (line) => {
  if (line.trim() === '') return
  void runCommand(line)
})
input.on('close', () => { void shutdown(0) })
