#!/usr/bin/env node
// js-libp2p peer for aiop2p's circuit relay v2 interop tests, driven over JSON lines like
// peer.mjs (one `ready` line, then one answer per command `{id, cmd, ...}`); logs go to stderr.
//
// Arguments:
//   --relay                 act as a circuit relay v2 server (off otherwise)
//   --duration-ms N         relay: circuit duration limit (js enforces it in ms)
//   --data-bytes N          relay: circuit data limit in bytes
//   --listen ADDR           repeatable; `<relay-addr>/p2p/<relay>/p2p-circuit` listens via a relay
// Every role can dial circuit addresses and serves the echo protocol on limited connections.
// Commands: echo {addr, data_b64} -> {data_b64}; ping {addr} -> {rtt_ms}; addrs -> {addrs};
//           quit.

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
const { multiaddr } = await import('@multiformats/multiaddr')

const ECHO_PROTOCOL = '/p2p/1.0.0'
const ECHO_MAX_MESSAGE_BYTES = 1024 * 1024
const MAX_STREAMS_PER_PROTOCOL = 1024
const CIRCUIT_ADDR_WAIT_MS = 15_000
const STOP_TIMEOUT_MS = 5_000
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
  const out = { relay: false, listen: [], durationMs: null, dataBytes: null }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--relay') out.relay = true
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

await node.handle(ECHO_PROTOCOL, async (stream) => {
  // libp2p 3 passes the stream itself (older versions pass {stream}).
  const s = stream.stream ?? stream
  try {
    const lp = lpStream(s, { maxDataLength: ECHO_MAX_MESSAGE_BYTES })
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
