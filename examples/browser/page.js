// A web page messaging a Python peer: js-libp2p in the browser dials aiop2p over WebTransport
// (or WebSocket) and sends requests on /p2p/1.0.0, aiop2p's request-response protocol: one stream
// per request, one unsigned-varint-length-prefixed JSON message each way.
//
// Build (from the repository root, see README.md): esbuild bundles this file and its imports
// from tests/interop/js/node_modules into examples/browser/dist/page.js.
import { createLibp2p } from 'libp2p'
import { webSockets } from '@libp2p/websockets'
import { webTransport } from '@libp2p/webtransport'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'

const PROTOCOL = '/p2p/1.0.0'
const MAX_REPLY_BYTES = 64 * 1024
const TIMEOUT_MS = 10_000

const addrInput = document.getElementById('addr')
const textInput = document.getElementById('text')
const logBox = document.getElementById('log')

function show (line) {
  console.log(line) // also on the console, where scripts (and the example's test) read it
  logBox.textContent += line + '\n'
}

const node = await createLibp2p({
  transports: [webTransport(), webSockets()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()], // WebSocket needs a muxer; WebTransport has streams of its own
  // A browser node refuses plain ws:// and private (LAN, loopback) addresses by default; this
  // example talks to a peer on the same machine or network, so it allows them.
  connectionGater: { denyDialMultiaddr: async () => false },
  services: { identify: identify(), ping: ping() }
})
show(`this page is ${node.peerId}`)

async function send (addr, text) {
  const signal = AbortSignal.timeout(TIMEOUT_MS)
  const stream = await node.dialProtocol(multiaddr(addr), PROTOCOL, { signal })
  try {
    const lp = lpStream(stream, { maxDataLength: MAX_REPLY_BYTES })
    await lp.write(new TextEncoder().encode(JSON.stringify({ text })), { signal })
    const reply = JSON.parse(new TextDecoder().decode((await lp.read({ signal })).subarray()))
    await stream.close()
    return reply
  } catch (err) {
    stream.abort(err)
    throw err
  }
}

async function sendFromForm () {
  try {
    const reply = await send(addrInput.value.trim(), textInput.value)
    show(`reply: ${JSON.stringify(reply)}`)
  } catch (err) {
    show(`failed: ${err.name}: ${err.message}`)
  }
}

document.getElementById('send').addEventListener('click', sendFromForm)

// The printed link carries the peer's address after '#'; '?send=TEXT' also sends TEXT at once.
addrInput.value = decodeURIComponent(window.location.hash.slice(1))
const params = new URLSearchParams(window.location.search)
if (params.has('send') && addrInput.value !== '') {
  textInput.value = params.get('send')
  await sendFromForm()
}
