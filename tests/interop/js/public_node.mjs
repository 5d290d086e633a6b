#!/usr/bin/env node
// A js-libp2p "public node" for aiop2p's NAT lab (tests/netns/test_reach_by_id_js.py): what
// `aiop2p relay` is there, in js — a circuit relay v2 server and a Kademlia DHT server (with
// identify, identify push and ping), whose identity survives a restart. Driven over JSON lines as
// peer.mjs (README.md): one `ready` line, then one answer per command `{id, cmd, ...}`; logs go to
// stderr.
//
// Arguments:
//   --listen ADDR      listen address (default /ip4/127.0.0.1/tcp/0)
//   --key PATH         the node's private key (protobuf); made on first use, read afterwards, so
//                      a restarted node has the same peer id
//   --allow CIDR       repeatable; peers from there bypass the connection manager's limits
//   --duration-ms N    relay: circuit duration limit (js's default: 2 minutes)
//   --data-bytes N     relay: circuit data limit in bytes (js's default: 128 KiB)
// The DHT runs as the interop notes say for private ranges: `clientMode: false` (a server from the
// start, not once it sees a public address of its own) and `peerInfoMapper: passthroughMapper` (the
// default mapper drops private addresses, and a peer left with none is not handed out).
// Commands: peer_addrs {peerId} -> {addrs} (what its peer store holds, the addresses its DHT hands
//           out for that id); reservations -> {count}; quit.

if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createInterface } = await import('node:readline')
const { existsSync, readFileSync, writeFileSync } = await import('node:fs')
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@libp2p/noise')
const { yamux } = await import('@libp2p/yamux')
const { identify, identifyPush } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { circuitRelayServer } = await import('@libp2p/circuit-relay-v2')
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht')
const { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } = await import('@libp2p/crypto/keys')
const { peerIdFromString } = await import('@libp2p/peer-id')

const STOP_TIMEOUT_MS = 5_000
const MAX_RESERVATIONS = 128
const LOOPBACK = ['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128']

function log (...parts) {
  process.stderr.write(`[js-public-node ${process.pid}] ${parts.join(' ')}\n`)
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function errorMessage (err) {
  if (err == null) return 'unknown error'
  const name = err.name != null && err.name !== 'Error' ? `${err.name}: ` : ''
  return `${name}${err.message ?? String(err)}`
}

function requireString (value, name) {
  if (typeof value !== 'string' || value.length === 0) throw new Error(`${name} is required`)
  return value
}

function parseArgs (argv) {
  const out = { listen: '/ip4/127.0.0.1/tcp/0', key: null, allow: [], durationMs: null, dataBytes: null }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const value = i + 1 < argv.length ? argv[i + 1] : null
    if (value == null) throw new Error(`incomplete argument: ${arg}`)
    i++
    if (arg === '--listen') out.listen = value
    else if (arg === '--key') out.key = value
    else if (arg === '--allow') out.allow.push(value)
    else if (arg === '--duration-ms') out.durationMs = Number(value)
    else if (arg === '--data-bytes') out.dataBytes = BigInt(value)
    else throw new Error(`unknown argument: ${arg}`)
  }
  return out
}

/** The key at `path` (protobuf bytes), made and written there first if absent. */
async function loadKey (path) {
  if (path == null) return generateKeyPair('Ed25519')
  if (existsSync(path)) return privateKeyFromProtobuf(readFileSync(path))
  const key = await generateKeyPair('Ed25519')
  writeFileSync(path, privateKeyToProtobuf(key), { mode: 0o600 })
  return key
}

const args = parseArgs(process.argv.slice(2))
const reservations = { maxReservations: MAX_RESERVATIONS }
if (args.durationMs != null) reservations.defaultDurationLimit = args.durationMs
if (args.dataBytes != null) reservations.defaultDataLimit = args.dataBytes

const node = await createLibp2p({
  privateKey: await loadKey(args.key),
  addresses: { listen: [args.listen] },
  nodeInfo: { userAgent: 'aiop2p-interop-js-public-node/1' },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionManager: { allow: [...LOOPBACK, ...args.allow], inboundConnectionThreshold: 1000 },
  services: {
    identify: identify(),
    identifyPush: identifyPush(),
    ping: ping(),
    relay: circuitRelayServer({ reservations }),
    dht: kadDHT({
      clientMode: false,
      peerInfoMapper: passthroughMapper,
      allowQueryWithZeroPeers: true
    })
  }
})

const commands = {
  async peer_addrs (cmd) {
    const peer = peerIdFromString(requireString(cmd.peerId, 'peerId'))
    try {
      const info = await node.peerStore.get(peer)
      return { addrs: info.addresses.map(a => a.multiaddr.toString()) }
    } catch (err) {
      if (err.name === 'NotFoundError') return { addrs: [] }
      throw err
    }
  },

  async reservations () {
    return { count: node.services.relay.reservations.size }
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
  if (cmd == null || typeof cmd !== 'object' || typeof cmd.cmd !== 'string') {
    emit({ id, ok: false, error: 'missing "cmd"' })
    return
  }
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
process.stdout.on('error', () => { void shutdown(0) })
process.on('SIGTERM', () => { void shutdown(0) })
process.on('SIGINT', () => { void shutdown(0) })

await node.start()
// js announces a public address only once AutoNAT verified it: name the bound listen addresses.
const bound = node.components.addressManager.getAddressesWithMetadata()
  .map(a => `${a.multiaddr.toString()}/p2p/${node.peerId.toString()}`)
emit({ event: 'ready', peerId: node.peerId.toString(), addrs: bound })

const input = createInterface({ input: process.stdin, crlfDelay: Infinity })
input.on('line', (line) => {
  if (line.trim() === '') return
  void runCommand(line)
})
input.on('close', () => { void shutdown(0) })
