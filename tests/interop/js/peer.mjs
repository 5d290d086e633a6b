#!/usr/bin/env node
// js-libp2p peer driven over a JSON-lines protocol on stdin/stdout by aiop2p's interop tests and
// benchmarks. The command protocol is documented in README.md next to this file.
//
// stdout carries protocol lines only (one JSON object per line); every log goes to stderr.

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

// Node 20 has no global WebSocket, which @libp2p/websockets dials with: take the `ws` package's.
if (typeof globalThis.WebSocket !== 'function') {
  const { WebSocket } = await import('ws')
  globalThis.WebSocket = WebSocket
}

const { createInterface } = await import('node:readline')
const { performance } = await import('node:perf_hooks')
const v8 = await import('node:v8')
const vm = await import('node:vm')
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { webSockets } = await import('@libp2p/websockets')
const { quic } = await import('@chainsafe/libp2p-quic')
const { noise } = await import('@libp2p/noise')
const { yamux } = await import('@libp2p/yamux')
const { identify, identifyPush } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { generateKeyPair, generateKeyPairFromSeed } = await import('@libp2p/crypto/keys')
const { byteStream, lpStream } = await import('@libp2p/utils')
const { multiaddr } = await import('@multiformats/multiaddr')
const { peerIdFromString } = await import('@libp2p/peer-id')

// ---- limits and constants (units in the names) ----------------------------------------------
const AGENT_VERSION = 'aiop2p-interop-js/1'
const ECHO_PROTOCOL = '/p2p/1.0.0'
const PERF_PROTOCOL = '/perf/1.0.0'
// aiop2p's chunked framing (docs/network.md, "Chunked framing"): a length-prefixed request;
// response chunks of one result byte + a length-prefixed payload, ended by the FIN
const CHUNKED_PROTOCOL = '/aiop2p/chunked/1.0.0'
const MAX_CHUNK_BYTES = 64 * 1024
const MAX_CHUNKS = 10_000
const MAX_ERROR_MESSAGE_BYTES = 256
const MAX_STREAMS_PER_PROTOCOL = 4096 // per connection, inbound and outbound, every protocol
const MAX_YAMUX_STREAMS = 8192 // per connection, whole muxer
const MAX_CONNECTIONS = 10_000 // connection manager limit (bench_conns opens thousands)
const MAX_DIAL_QUEUE_LENGTH = 10_000
const ECHO_MAX_MESSAGE_BYTES = 1024 * 1024
const PERF_CHUNK_BYTES = 64 * 1024 // one yamux data frame at js-yamux's default max message size
const IDENTIFY_WAIT_MS = 5_000 // wait for the automatic identify before running one explicitly
const STOP_TIMEOUT_MS = 5_000
const MAX_BENCH_COUNT = 1_000_000
// Untimed iterations before a benchmark so V8 has optimised the hot paths: a fresh process serves
// ~500 sequential echo req/s, a warm one ~1200 (steady after ~2000 requests). A command's "warmup"
// field overrides these.
const DEFAULT_ECHO_WARMUP_REQUESTS = 2000
const DEFAULT_DIAL_WARMUP_DIALS = 20
const DEFAULT_PERF_WARMUP_BYTES = 128 * 1024 * 1024 // per direction in use, one untimed exchange
// Loopback is exempt from the inbound rate limit (5 conn/s/host), the pending-connection cap and
// the pruner, so local benchmarks are not throttled.
const ALLOW_LIST = ['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128']

// ---- small helpers ------------------------------------------------------------------------------
function log (...parts) {
  process.stderr.write(`[js-peer ${process.pid}] ${parts.join(' ')}\n`)
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function errorMessage (err) {
  if (err == null) return 'unknown error'
  const name = err.name != null && err.name !== 'Error' ? `${err.name}: ` : ''
  return `${name}${err.message ?? String(err)}`
}

// An explicit GC before RSS readings makes the per-connection figure far less noisy.
let runGc = null
try {
  v8.setFlagsFromString('--expose-gc')
  runGc = vm.runInNewContext('gc')
} catch {
  runGc = null
}

async function settledRss () {
  if (runGc != null) {
    runGc()
    await new Promise(resolve => setTimeout(resolve, 50))
    runGc()
  }
  return process.memoryUsage().rss
}

/** Linear-interpolation quantile of an ascending array (numpy's default method). */
function quantile (sorted, q) {
  if (sorted.length === 0) return null
  const pos = (sorted.length - 1) * q
  const lo = Math.floor(pos)
  const hi = Math.ceil(pos)
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo)
}

function toInt (value, name, min, max) {
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new Error(`${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(value)}`)
  }
  return n
}

function requireString (value, name) {
  if (typeof value !== 'string' || value.length === 0) throw new Error(`${name} is required`)
  return value
}

function parseArgs (argv) {
  const listen = []
  let seed = null
  let pingIntervalMs = null
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--listen' && i + 1 < argv.length) {
      listen.push(argv[++i])
    } else if (arg === '--seed' && i + 1 < argv.length) {
      seed = argv[++i]
    } else if (arg === '--ping-interval-ms' && i + 1 < argv.length) {
      pingIntervalMs = Number.parseInt(argv[++i], 10)
    } else {
      throw new Error(`unknown or incomplete argument: ${arg}`)
    }
  }
  if (seed != null && !/^[0-9a-fA-F]{64}$/.test(seed)) {
    throw new Error('--seed must be 64 hex characters (a 32-byte Ed25519 seed)')
  }
  if (pingIntervalMs != null && !(pingIntervalMs > 0)) {
    throw new Error('--ping-interval-ms must be a positive integer')
  }
  return { listen: listen.length > 0 ? listen : ['/ip4/127.0.0.1/tcp/0'], seed, pingIntervalMs }
}

// ---- node ---------------------------------------------------------------------------------------
const args = parseArgs(process.argv.slice(2))
const privateKey = args.seed != null
  ? await generateKeyPairFromSeed('Ed25519', Uint8Array.from(Buffer.from(args.seed, 'hex')))
  : await generateKeyPair('Ed25519')

const streamLimits = {
  maxInboundStreams: MAX_STREAMS_PER_PROTOCOL,
  maxOutboundStreams: MAX_STREAMS_PER_PROTOCOL
}

const node = await createLibp2p({
  privateKey,
  addresses: { listen: args.listen },
  nodeInfo: { userAgent: AGENT_VERSION },
  // 0 disables the 2-minute socket inactivity timeout: tests hold idle connections for longer.
  transports: [
    tcp({ inboundSocketInactivityTimeout: 0, outboundSocketInactivityTimeout: 0 }),
    webSockets(), // listens on and dials /ws
    quic() // listens on and dials /udp/N/quic-v1 (its own TLS and streams: no Noise, no Yamux)
  ],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux({ maxInboundStreams: MAX_YAMUX_STREAMS, maxOutboundStreams: MAX_YAMUX_STREAMS })],
  // The connection monitor pings every connected peer (js-libp2p's default: every 10 s).
  connectionMonitor: args.pingIntervalMs != null ? { pingInterval: args.pingIntervalMs } : {},
  connectionManager: {
    maxConnections: MAX_CONNECTIONS,
    maxIncomingPendingConnections: MAX_CONNECTIONS,
    inboundConnectionThreshold: MAX_CONNECTIONS,
    maxDialQueueLength: MAX_DIAL_QUEUE_LENGTH,
    allow: ALLOW_LIST
  },
  services: {
    identify: identify(streamLimits),
    identifyPush: identifyPush(streamLimits),
    ping: ping(streamLimits)
  }
})

// ---- identify bookkeeping -----------------------------------------------------------------------
const identifyByConnection = new Map() // connection id -> IdentifyResult of that connection
const identifyWaiters = new Map() // connection id -> Set<resolve>
const identifyByPeer = new Map() // peer id string -> merged identify fields (push may be partial)

function identifyFields (result) {
  return {
    peerId: result.peerId.toString(),
    protocols: [...(result.protocols ?? [])],
    listenAddrs: (result.listenAddrs ?? []).map(ma => ma.toString()),
    agentVersion: result.agentVersion ?? null,
    protocolVersion: result.protocolVersion ?? null,
    observedAddr: result.observedAddr != null ? result.observedAddr.toString() : null
  }
}

node.addEventListener('peer:identify', (evt) => {
  const result = evt.detail
  const fields = identifyFields(result)
  const previous = identifyByPeer.get(fields.peerId)
  if (previous == null) {
    identifyByPeer.set(fields.peerId, fields)
  } else {
    // identify push may carry only the changed fields: keep the rest
    if (fields.protocols.length > 0) previous.protocols = fields.protocols
    if (fields.listenAddrs.length > 0) previous.listenAddrs = fields.listenAddrs
    for (const key of ['agentVersion', 'protocolVersion', 'observedAddr']) {
      if (fields[key] != null) previous[key] = fields[key]
    }
  }
  const connId = result.connection?.id
  if (connId != null && !identifyByConnection.has(connId)) {
    identifyByConnection.set(connId, result)
    const waiters = identifyWaiters.get(connId)
    if (waiters != null) {
      identifyWaiters.delete(connId)
      for (const resolve of waiters) resolve(result)
    }
  }
})

node.addEventListener('connection:close', (evt) => {
  identifyByConnection.delete(evt.detail.id)
})

function waitIdentify (connection, timeoutMs) {
  const known = identifyByConnection.get(connection.id)
  if (known != null) return Promise.resolve(known)
  return new Promise((resolve) => {
    let waiters = identifyWaiters.get(connection.id)
    if (waiters == null) {
      waiters = new Set()
      identifyWaiters.set(connection.id, waiters)
    }
    const timer = setTimeout(() => {
      waiters.delete(done)
      if (waiters.size === 0) identifyWaiters.delete(connection.id)
      resolve(null)
    }, timeoutMs)
    function done (result) {
      clearTimeout(timer)
      resolve(result)
    }
    waiters.add(done)
  })
}

// ---- protocol handlers --------------------------------------------------------------------------
async function handleEcho (stream) {
  try {
    const lp = lpStream(stream, { maxDataLength: ECHO_MAX_MESSAGE_BYTES })
    const message = await lp.read()
    await lp.write(message)
    await stream.close()
  } catch (err) {
    log('echo handler:', errorMessage(err))
    stream.abort(err)
  }
}

// ---- chunked framing: one result byte, then an unsigned varint length and the payload ----------
function encodeUvarint (n) {
  const out = []
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80)
    n = Math.floor(n / 128)
  }
  out.push(n)
  return Uint8Array.from(out)
}

async function readUvarint (bytes) {
  let value = 0
  let scale = 1
  for (let i = 0; i < 9; i++) {
    const buf = await bytes.read({ bytes: 1 })
    if (buf == null) throw new Error('chunked: stream ended inside a length')
    const b = buf.get(0)
    value += (b & 0x7f) * scale
    if ((b & 0x80) === 0) return value
    scale *= 128
  }
  throw new Error('chunked: length prefix too long')
}

async function writeChunk (bytes, code, payload) {
  await bytes.write(Uint8Array.from([code, ...encodeUvarint(payload.byteLength)]))
  await bytes.write(payload)
}

// The next chunk ({ code, data }), or null at the response's clean end (FIN).
async function readChunk (bytes) {
  let head
  try {
    head = await bytes.read({ bytes: 1 })
  } catch (err) {
    // a sized read reports the FIN as an error even before any byte: that is the clean end
    if (err.name === 'UnexpectedEOFError' && / 0\/1 bytes/.test(err.message)) return null
    throw err
  }
  if (head == null) return null
  const code = head.get(0)
  if (code > 3) throw new Error(`chunked: unknown result code ${code}`)
  const length = await readUvarint(bytes)
  const limit = code === 0 ? MAX_CHUNK_BYTES : MAX_ERROR_MESSAGE_BYTES
  if (length > limit) throw new Error(`chunked: chunk of ${length} bytes above ${limit}`)
  const data = length === 0 ? new Uint8Array(0) : (await bytes.read({ bytes: length })).subarray()
  return { code, data }
}

// Request (JSON): { "count": n, "error": [code, message] | null }; the response is the JSON
// numbers 0..n-1, one chunk each, then the error chunk if asked for.
async function handleChunked (stream) {
  try {
    const bytes = byteStream(stream)
    const length = await readUvarint(bytes)
    if (length > MAX_CHUNK_BYTES) throw new Error(`chunked: request of ${length} bytes`)
    const request = JSON.parse(Buffer.from((await bytes.read({ bytes: length })).subarray()).toString('utf8'))
    const count = toInt(request.count ?? 0, 'count', 0, MAX_CHUNKS)
    for (let i = 0; i < count; i++) {
      await writeChunk(bytes, 0, Buffer.from(JSON.stringify(i)))
    }
    if (Array.isArray(request.error)) {
      await writeChunk(bytes, toInt(request.error[0], 'code', 1, 3), Buffer.from(String(request.error[1])))
    }
    await stream.close()
  } catch (err) {
    log('chunked handler:', errorMessage(err))
    stream.abort(err)
  }
}

const SEND_BUFFER = new Uint8Array(PERF_CHUNK_BYTES) // content is irrelevant to perf; reused

async function sendZeros (stream, total) {
  let remaining = total
  while (remaining > 0) {
    const size = Math.min(remaining, PERF_CHUNK_BYTES)
    const chunk = size === PERF_CHUNK_BYTES ? SEND_BUFFER : SEND_BUFFER.subarray(0, size)
    remaining -= size
    if (!stream.send(chunk)) await stream.onDrain()
  }
}

/**
 * Deliver every inbound chunk to `onData` and resolve at EOF (remote write side closed and all
 * data delivered). Bulk transfers cannot go through byteStream: js-yamux pushes whole TCP reads
 * synchronously, so an awaiting reader falls behind and trips byteStream's 4 MiB buffer limit.
 *
 * EOF is "remote write side closed and nothing buffered", checked after each message too, not
 * the 'end' event alone: when the FIN is read while multistream-select still holds the bytes that
 * followed the protocol line (a request and its FIN in one QUIC packet, as perf's download
 * request), @libp2p/utils ends the stream (`readableEnded`, 'end') before `unwrap()` puts those
 * bytes back, and emits no second 'end' once they are delivered: a reader that trusts
 * `readableEnded` sees EOF before the request (docs/transports.md, "js-libp2p over QUIC").
 */
function consumeStream (stream, onData) {
  return new Promise((resolve, reject) => {
    const atEof = () => stream.remoteWriteStatus !== 'writable' && stream.readBufferLength === 0
    const cleanup = () => {
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('end', onEnd)
      stream.removeEventListener('close', onClose)
    }
    const onMessage = (evt) => {
      try {
        onData(evt.data)
      } catch (err) {
        cleanup()
        reject(err)
        return
      }
      if (stream.readableEnded && atEof()) onEnd() // the late bytes: no 'end' follows
    }
    const onEnd = () => {
      cleanup()
      if (stream.status === 'reset' || stream.status === 'aborted') {
        reject(new Error(`stream ${stream.status} before EOF`))
      } else {
        resolve()
      }
    }
    const onClose = (evt) => {
      if (evt.error != null) {
        cleanup()
        reject(evt.error)
      } else if (stream.readableEnded && atEof()) {
        onEnd()
      }
    }
    stream.addEventListener('message', onMessage)
    stream.addEventListener('end', onEnd)
    stream.addEventListener('close', onClose)
    if (stream.readableEnded && atEof()) onEnd()
  })
}

async function handlePerf (stream) {
  try {
    const header = new Uint8Array(8)
    let headerBytes = 0
    let uploaded = 0
    // step 2 (read to EOF) completes before step 3 (send) starts, as perf.md requires
    await consumeStream(stream, (data) => {
      if (headerBytes < 8) {
        const take = Math.min(8 - headerBytes, data.byteLength)
        header.set(data.subarray(0, take), headerBytes)
        headerBytes += take
        uploaded += data.byteLength - take
      } else {
        uploaded += data.byteLength
      }
    })
    if (headerBytes < 8) throw new Error(`perf: stream ended after ${headerBytes}/8 header bytes`)
    const requested = new DataView(header.buffer).getBigUint64(0, false)
    // a client asking for more than 2^53 bytes runs a timer-based download and resets the stream
    const toSend = requested > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(requested)
    await sendZeros(stream, toSend)
    await stream.close()
  } catch (err) {
    log('perf handler:', errorMessage(err))
    stream.abort(err)
  }
}

await node.handle(ECHO_PROTOCOL, handleEcho, streamLimits)
await node.handle(PERF_PROTOCOL, handlePerf, streamLimits)
await node.handle(CHUNKED_PROTOCOL, handleChunked, streamLimits)

// ---- client operations --------------------------------------------------------------------------
async function dial (addr, options = {}) {
  return node.dial(multiaddr(requireString(addr, 'addr')), options)
}

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

async function perfClient (connection, upload, download) {
  const t0 = performance.now()
  const stream = await connection.newStream(PERF_PROTOCOL, streamLimits)
  try {
    const header = new Uint8Array(8)
    new DataView(header.buffer).setBigUint64(0, BigInt(download), false)
    if (!stream.send(header)) await stream.onDrain()
    await sendZeros(stream, upload)
    await stream.close() // close our write side: the server now answers
    const t1 = performance.now()
    let received = 0
    await consumeStream(stream, (data) => { received += data.byteLength })
    const t2 = performance.now()
    if (received !== download) {
      throw new Error(`perf: expected ${download} bytes, received ${received}`)
    }
    const total = (t2 - t0) / 1000
    return {
      // With one direction at 0 its counterpart's time is the whole exchange (stream open to
      // remote close), as perf.md measures; with both non-zero the split point is the local
      // write-side close.
      upload_seconds: download === 0 ? total : (t1 - t0) / 1000,
      download_seconds: upload === 0 ? total : (t2 - t1) / 1000,
      total_seconds: total,
      upload_bytes: upload,
      download_bytes: received
    }
  } catch (err) {
    stream.abort(err)
    throw err
  }
}

const heldConnections = [] // bench_conns keeps these open until close_all

async function closeQuietly (connection) {
  try {
    await connection.close()
  } catch (err) {
    connection.abort(err)
  }
}

// ---- commands -----------------------------------------------------------------------------------
const commands = {
  async ping (cmd) {
    const connection = await dial(cmd.addr)
    const t0 = performance.now()
    const libRttMs = await node.services.ping.ping(connection.remotePeer)
    return { rtt_ms: performance.now() - t0, lib_rtt_ms: libRttMs }
  },

  async echo (cmd) {
    const b64 = cmd.data_b64 ?? ''
    if (typeof b64 !== 'string') throw new Error('data_b64 must be a base64 string')
    const payload = Buffer.from(b64, 'base64')
    const connection = await dial(cmd.addr)
    const response = await echoOnce(connection, payload)
    return { data_b64: Buffer.from(response.subarray()).toString('base64') }
  },

  // Send cmd.request (JSON) on the chunked protocol; return every chunk until the FIN.
  async chunked (cmd) {
    const connection = await dial(cmd.addr)
    const stream = await connection.newStream(CHUNKED_PROTOCOL, streamLimits)
    try {
      const bytes = byteStream(stream)
      const payload = Buffer.from(JSON.stringify(cmd.request ?? null))
      await bytes.write(Uint8Array.from([...encodeUvarint(payload.byteLength), ...payload]))
      await stream.close() // the requester half-closes after its request
      const chunks = []
      for (let i = 0; i <= MAX_CHUNKS; i++) {
        const chunk = await readChunk(bytes)
        if (chunk == null) return { chunks }
        chunks.push({ code: chunk.code, text: Buffer.from(chunk.data).toString('utf8') })
      }
      throw new Error('chunked: too many chunks')
    } catch (err) {
      stream.abort(err)
      throw err
    }
  },

  async identify (cmd) {
    const connection = await dial(cmd.addr)
    let result = await waitIdentify(connection, IDENTIFY_WAIT_MS)
    if (result == null) {
      // the automatic identify failed or is slow: run one explicitly so its error is reported
      result = await node.services.identify.identify(connection)
    }
    return identifyFields(result)
  },

  async peer_info (cmd) {
    const peerId = peerIdFromString(requireString(cmd.peerId, 'peerId'))
    const learned = identifyByPeer.get(peerId.toString())
    if (learned == null) throw new Error('unknown')
    const peer = await node.peerStore.get(peerId)
    const text = (key) => {
      const value = peer.metadata.get(key)
      return value == null ? null : Buffer.from(value).toString('utf8')
    }
    return {
      peerId: peerId.toString(),
      protocols: peer.protocols.length > 0 ? [...peer.protocols] : learned.protocols,
      listenAddrs: peer.addresses.length > 0
        ? peer.addresses.map(a => a.multiaddr.toString())
        : learned.listenAddrs,
      agentVersion: text('AgentVersion') ?? learned.agentVersion,
      protocolVersion: text('ProtocolVersion') ?? learned.protocolVersion,
      observedAddr: learned.observedAddr,
      // the addresses js took from a signed peer record it verified, and that record's seq
      certifiedAddrs: peer.addresses.filter(a => a.isCertified).map(a => a.multiaddr.toString()),
      hasPeerRecord: peer.peerRecordEnvelope != null
    }
  },

  async perf (cmd) {
    const upload = toInt(cmd.upload ?? 0, 'upload', 0, Number.MAX_SAFE_INTEGER)
    const download = toInt(cmd.download ?? 0, 'download', 0, Number.MAX_SAFE_INTEGER)
    const warmupBytes = toInt(cmd.warmup_bytes ?? DEFAULT_PERF_WARMUP_BYTES, 'warmup_bytes', 0, Number.MAX_SAFE_INTEGER)
    const connection = await dial(cmd.addr)
    if (warmupBytes > 0) {
      await perfClient(connection, Math.min(upload, warmupBytes), Math.min(download, warmupBytes))
    }
    return { ...(await perfClient(connection, upload, download)), warmup_bytes: warmupBytes }
  },

  async bench_dial (cmd) {
    const count = toInt(cmd.count ?? 50, 'count', 1, MAX_BENCH_COUNT)
    const ma = multiaddr(requireString(cmd.addr, 'addr'))
    const warmup = toInt(cmd.warmup ?? DEFAULT_DIAL_WARMUP_DIALS, 'warmup', 0, MAX_BENCH_COUNT)
    for (let i = 0; i < warmup; i++) await closeQuietly(await node.dial(ma, { force: true }))
    const samples = []
    const seen = new Set()
    for (let i = 0; i < count; i++) {
      const t0 = performance.now()
      // force: never reuse an existing connection to that peer
      const connection = await node.dial(ma, { force: true })
      samples.push(performance.now() - t0)
      if (seen.has(connection.id)) throw new Error('bench_dial: a connection was reused')
      seen.add(connection.id)
      await closeQuietly(connection)
    }
    const sorted = [...samples].sort((a, b) => a - b)
    return {
      median_ms: quantile(sorted, 0.5),
      p90_ms: quantile(sorted, 0.9),
      samples_ms: samples,
      warmup
    }
  },

  async bench_echo (cmd) {
    const count = toInt(cmd.count ?? 1000, 'count', 1, MAX_BENCH_COUNT)
    const concurrency = toInt(cmd.concurrency ?? 1, 'concurrency', 1, MAX_STREAMS_PER_PROTOCOL)
    const size = toInt(cmd.size ?? 64, 'size', 0, ECHO_MAX_MESSAGE_BYTES)
    const payload = new Uint8Array(size)
    for (let i = 0; i < size; i++) payload[i] = i & 0xff
    const warmup = toInt(cmd.warmup ?? DEFAULT_ECHO_WARMUP_REQUESTS, 'warmup', 0, MAX_BENCH_COUNT)
    const connection = await dial(cmd.addr)
    const latencies = new Array(count)
    // `count` requests with `concurrency` in flight; latency is recorded when `record` is set
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
      warmup
    }
  },

  async bench_conns (cmd) {
    const count = toInt(cmd.count ?? 1000, 'count', 1, MAX_CONNECTIONS)
    const ma = multiaddr(requireString(cmd.addr, 'addr'))
    const rssBefore = await settledRss()
    // Sequential forced dials: js-libp2p joins concurrent dials to the same peer into one, so
    // parallel dialing would not yield distinct connections; `force: true` skips reuse.
    const start = performance.now()
    let opened = 0
    let error = null
    for (let i = 0; i < count; i++) {
      try {
        heldConnections.push(await node.dial(ma, { force: true }))
        opened++
      } catch (err) {
        error = errorMessage(err)
        break
      }
    }
    const dialSeconds = (performance.now() - start) / 1000
    const rssAfter = await settledRss()
    const reply = {
      rss_before: rssBefore,
      rss_after: rssAfter,
      per_conn_bytes: opened > 0 ? (rssAfter - rssBefore) / opened : null,
      opened,
      dial_seconds: dialSeconds,
      open_total: node.getConnections().length
    }
    if (error != null) reply.error = error
    return reply
  },

  async close_all () {
    const connections = heldConnections.splice(0)
    await Promise.all(connections.map(closeQuietly))
    return { closed: connections.length }
  },

  async rss (cmd) {
    return { rss: cmd.gc === true ? await settledRss() : process.memoryUsage().rss }
  },

  async connections () {
    const conns = node.getConnections()
    return { connections: conns.length, peers: new Set(conns.map(c => c.remotePeer.toString())).size }
  }
}

// ---- main loop ----------------------------------------------------------------------------------
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
    const result = await handler(cmd)
    emit({ id, ok: true, ...result })
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
  addrs: node.getMultiaddrs().map(ma => ma.toString())
})
log('ready', node.peerId.toString())

const input = createInterface({ input: process.stdin, crlfDelay: Infinity })
input.on('line', (line) => {
  if (line.trim() === '') return
  void runCommand(line)
})
input.on('close', () => { void shutdown(0) })
