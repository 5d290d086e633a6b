#!/usr/bin/env node
// js-libp2p peer running @libp2p/kad-dht in server mode, driven over JSON lines on stdin/stdout by
// aiop2p's Kademlia interop tests (tests/interop/test_js_kad.py). The command protocol is the one
// of peer.mjs (README.md): a `ready` line, then one answer per command.
//
// Loopback needs two DHT options: `clientMode: false` (otherwise the node stays a client until it
// sees a public address of its own) and `peerInfoMapper: passthroughMapper` (the default mapper
// drops loopback addresses, and a peer left without addresses never enters the routing table).
// With `--autonat` it also runs @libp2p/autonat-v2, and `--listen ADDR` replaces the loopback
// listen address (tests/interop/test_js_autonat.py runs it in a network namespace).

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
const { identify, identifyPush } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht')
const { multiaddr } = await import('@multiformats/multiaddr')
const { peerIdFromString } = await import('@libp2p/peer-id')
const { autoNATv2 } = await import('@libp2p/autonat-v2')

const STOP_TIMEOUT_MS = 5_000
const FIND_PEER_TIMEOUT_MS = 30_000
const ALLOW_LIST = ['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128']

function log (...parts) {
  process.stderr.write(`[js-kad ${process.pid}] ${parts.join(' ')}\n`)
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
  let protocol = '/ipfs/kad/1.0.0'
  let autonat = false
  let listen = '/ip4/127.0.0.1/tcp/0'
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--protocol' && i + 1 < argv.length) {
      protocol = argv[++i]
    } else if (argv[i] === '--listen' && i + 1 < argv.length) {
      listen = argv[++i]
    } else if (argv[i] === '--autonat') {
      autonat = true
    } else {
      throw new Error(`unknown or incomplete argument: ${argv[i]}`)
    }
  }
  return { protocol, autonat, listen }
}

const args = parseArgs(process.argv.slice(2))

const node = await createLibp2p({
  addresses: { listen: [args.listen] },
  nodeInfo: { userAgent: 'aiop2p-interop-js-kad/1' },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionManager: { allow: ALLOW_LIST },
  services: {
    identify: identify(),
    identifyPush: identifyPush(),
    ping: ping(),
    dht: kadDHT({
      protocol: args.protocol,
      clientMode: false,
      peerInfoMapper: passthroughMapper,
      allowQueryWithZeroPeers: true
    }),
    ...(args.autonat ? { autoNAT: autoNATv2() } : {})
  }
})

const commands = {
  async dial (cmd) {
    const conn = await node.dial(multiaddr(requireString(cmd.addr, 'addr')))
    return { peerId: conn.remotePeer.toString() }
  },

  async in_table (cmd) {
    const peer = peerIdFromString(requireString(cmd.peerId, 'peerId'))
    const found = await node.services.dht.routingTable.find(peer)
    return { present: found != null, size: node.services.dht.routingTable.size }
  },

  async find_peer (cmd) {
    const peer = peerIdFromString(requireString(cmd.peerId, 'peerId'))
    const info = await node.peerRouting.findPeer(peer, { signal: AbortSignal.timeout(FIND_PEER_TIMEOUT_MS) })
    return { peerId: info.id.toString(), addrs: info.multiaddrs.map(ma => ma.toString()) }
  },

  async addresses () {
    // What AutoNAT concluded about our own addresses (`verified`).
    const addrs = node.components.addressManager.getAddressesWithMetadata()
    return { addrs: addrs.map(a => ({ addr: a.multiaddr.toString(), verified: a.verified, type: a.type })) }
  },

  async ping (cmd) {
    const peer = peerIdFromString(requireString(cmd.peerId, 'peerId'))
    const rtt = await node.services.ping.ping(peer)
    return { rtt_ms: rtt }
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
// js announces a public address only once AutoNAT verified it: before that, name the
// bound listen addresses.
const announced = node.getMultiaddrs().map(ma => ma.toString())
const bound = node.components.addressManager.getAddressesWithMetadata()
  .map(a => `${a.multiaddr.toString()}/p2p/${node.peerId.toString()}`)
emit({
  event: 'ready',
  peerId: node.peerId.toString(),
  addrs: announced.length > 0 ? announced : bound
})

const input = createInterface({ input: process.stdin, crlfDelay: Infinity })
input.on('line', (line) => {
  if (line.trim() === '') return
  void runCommand(line)
})
input.on('close', () => { void shutdown(0) })
