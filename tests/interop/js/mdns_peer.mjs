#!/usr/bin/env node
// A js-libp2p peer with @libp2p/mdns discovery, for aiop2p's network-namespace tests.
//
// stdout (one JSON object per line): {"event":"ready","peerId","addrs"} once started, then
// {"event":"discovered","peerId","addrs"} for every `peer:discovery` event. stdin commands, answered
// with the same "id" and "ok": {"cmd":"ping","peerId"} (dials through the peer store, i.e. the
// addresses mDNS found), {"cmd":"quit"}. Logs go to stderr.
//
// Usage: node mdns_peer.mjs [--listen MULTIADDR] [--interval MS]

// Node 20 lacks Promise.withResolvers, which libp2p 3.3's dependency tree calls at runtime. It must
// exist before any libp2p module is evaluated, hence the dynamic imports below (static imports are
// hoisted above this statement).
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
const { mdns } = await import('@libp2p/mdns')
const { peerIdFromString } = await import('@libp2p/peer-id')

const STOP_TIMEOUT_MS = 5_000
const DEFAULT_QUERY_INTERVAL_MS = 10_000 // @libp2p/mdns's own default

function log (...parts) {
  process.stderr.write(`[js-mdns-peer ${process.pid}] ${parts.join(' ')}\n`)
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
  const args = { listen: [], interval: DEFAULT_QUERY_INTERVAL_MS }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--listen') args.listen.push(argv[++i])
    else if (argv[i] === '--interval') args.interval = Number(argv[++i])
    else throw new Error(`unknown argument ${argv[i]}`)
  }
  if (args.listen.length === 0) args.listen.push('/ip4/0.0.0.0/tcp/0')
  return args
}

const args = parseArgs(process.argv.slice(2))

const node = await createLibp2p({
  addresses: { listen: args.listen },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  peerDiscovery: [mdns({ interval: args.interval })],
  services: { identify: identify(), ping: ping() }
})

node.addEventListener('peer:discovery', (evt) => {
  emit({
    event: 'discovered',
    peerId: evt.detail.id.toString(),
    addrs: evt.detail.multiaddrs.map(a => a.toString())
  })
})

const commands = {
  async ping (cmd) {
    const rtt = await node.services.ping.ping(peerIdFromString(cmd.peerId))
    return { rtt }
  }
}

let stopping = false

async function shutdown (code) {
  if (stopping) return
  stopping = true
  const timer = setTimeout(() => process.exit(code), STOP_TIMEOUT_MS)
  timer.unref()
  try {
    await node.stop()
  } catch (err) {
    log('stop:', errorMessage(err))
  }
  process.exit(code)
}

async function runCommand (line) {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch {
    emit({ id: null, ok: false, error: 'invalid JSON' })
    return
  }
  const id = cmd?.id ?? null
  if (cmd?.cmd === 'quit') {
    emit({ id, ok: true })
    await shutdown(0)
    return
  }
  const handler = Object.hasOwn(commands, cmd?.cmd) ? commands[cmd.cmd] : null
  if (handler == null) {
    emit({ id, ok: false, error: `unknown command: ${cmd?.cmd}` })
    return
  }
  try {
    emit({ id, ok: true, ...(await handler(cmd)) })
  } catch (err) {
    emit({ id, ok: false, error: errorMessage(err) })
  }
}

process.on('unhandledRejection', (err) => { log('unhandled rejection:', errorMessage(err)) })
process.on('uncaughtException', (err) => { log('uncaught exception:', errorMessage(err), err?.stack ?? '') })
process.stdout.on('error', () => { void shutdown(0) }) // parent went away (EPIPE)
process.on('SIGTERM', () => { void shutdown(0) })
process.on('SIGINT', () => { void shutdown(0) })

await node.start()
emit({
  event: 'ready',
  peerId: node.peerId.toString(),
  addrs: node.getMultiaddrs().map(a => a.toString())
})

const rl = createInterface({ input: process.stdin })
rl.on('line', (line) => { void runCommand(line) })
rl.on('close', () => { void shutdown(0) })
