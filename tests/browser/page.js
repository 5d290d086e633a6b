// A js-libp2p node in a web page, driven by its URL and reporting to the page's origin.
//
// The test bundles this file with esbuild and serves it from http://127.0.0.1:<port>; the page
// URL carries `addr` (the multiaddr to dial, /p2p/ id included), `seed` (64 hex digits: the
// page's Ed25519 identity, so the test knows its peer id and can set its firewall rule first) and
// `ops` (a JSON list of operations). The page dials once, runs the operations in order and POSTs one JSON report to
// /report: { dial: {ok, error?}, results: [{ok, ...}] }. Every failure is reported, never thrown.
import { createLibp2p } from 'libp2p'
import { webSockets } from '@libp2p/websockets'
import { webTransport } from '@libp2p/webtransport'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'

// the request-response protocol (docs/network.md): one stream per request, one
// uvarint-length-prefixed JSON message each way
const REQUEST_PROTOCOL = '/p2p/1.0.0'
const MAX_RESPONSE_BYTES = 1024 * 1024
const DIAL_TIMEOUT_MS = 10_000
const OP_TIMEOUT_MS = 10_000
const MAX_OPS = 100

function describe (err) {
  return { ok: false, name: err?.name ?? 'Error', error: String(err?.message ?? err) }
}

async function report (body) {
  await fetch('/report', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body)
  })
}

async function request (connection, value) {
  const stream = await connection.newStream(REQUEST_PROTOCOL, { signal: AbortSignal.timeout(OP_TIMEOUT_MS) })
  try {
    const lp = lpStream(stream, { maxDataLength: MAX_RESPONSE_BYTES })
    await lp.write(new TextEncoder().encode(JSON.stringify(value)), { signal: AbortSignal.timeout(OP_TIMEOUT_MS) })
    const answer = await lp.read({ signal: AbortSignal.timeout(OP_TIMEOUT_MS) })
    await stream.close()
    return { ok: true, response: JSON.parse(new TextDecoder().decode(answer.subarray())) }
  } catch (err) {
    stream.abort(err)
    throw err
  }
}

async function run (node, connection, op) {
  if (op.op === 'ping') {
    const rttMs = await node.services.ping.ping(connection.remoteAddr, { signal: AbortSignal.timeout(OP_TIMEOUT_MS) })
    return { ok: true, rtt_ms: rttMs }
  }
  if (op.op === 'request') return await request(connection, op.body)
  throw new Error(`unknown op ${JSON.stringify(op.op)}`)
}

async function main () {
  const params = new URLSearchParams(window.location.search)
  const ops = JSON.parse(params.get('ops') ?? '[]').slice(0, MAX_OPS)
  const seed = params.get('seed') ?? ''
  if (!/^[0-9a-f]{64}$/.test(seed)) throw new Error('seed must be 64 lowercase hex digits')
  const seedBytes = Uint8Array.from(seed.match(/../g), (byte) => Number.parseInt(byte, 16))
  const node = await createLibp2p({
    privateKey: await generateKeyPairFromSeed('Ed25519', seedBytes),
    transports: [webSockets(), webTransport()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // In a browser js-libp2p refuses to dial plain ws:// and private (loopback included)
    // addresses unless the connection gater says otherwise: the tests dial 127.0.0.1.
    connectionGater: { denyDialMultiaddr: async () => false },
    services: { identify: identify(), ping: ping() }
  })
  const body = { peer_id: node.peerId.toString(), dial: null, results: [] }
  try {
    let connection
    try {
      connection = await node.dial(multiaddr(params.get('addr')), { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
      body.dial = { ok: true, remote_peer: connection.remotePeer.toString() }
    } catch (err) {
      body.dial = describe(err)
      return
    }
    for (const op of ops) {
      try {
        body.results.push(await run(node, connection, op))
      } catch (err) {
        body.results.push(describe(err))
      }
    }
  } finally {
    await node.stop().catch(() => {})
    await report(body)
  }
}

main().catch((err) => report({ crashed: describe(err) }))
