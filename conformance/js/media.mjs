// Media conformance scenario for Corvid, driven by matrix-js-sdk (README.md, "The media
// scenario"): alice uploads a photo with the SDK, sends it as an `m.image` in a DM, and bob's
// client, seeing the message through /sync, downloads the photo and two thumbnails through the
// authenticated media endpoints (URLs built by the SDK's own `mxcUrlToHttp`).
//
// Usage (normally via run.sh):
//   node media.mjs <corvid-binary> <workdir> <config-file> <port>

import { createHash } from "node:crypto";
import zlib from "node:zlib";

import {
    BASE_URL,
    FatalError,
    REQUEST_TIMEOUT_MS,
    api,
    call,
    out,
    problem,
    register,
    run,
    safeJson,
    sdk,
    setStep,
    startServer,
    waitForVersions,
    waitUntil,
} from "./lib.mjs";

const OBSERVE_TIMEOUT_MS = 15_000;
const PHOTO = { width: 640, height: 480 };
const clients = [];

// ---------------------------------------------------------------------------
// A photo to send: a PNG made here (zlib + CRC-32), and readers of image sizes
// ---------------------------------------------------------------------------
function pngChunk(type, data) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(body) >>> 0);
    return Buffer.concat([length, body, crc]);
}

/** An RGB gradient, different in every run (so dedup with an earlier run cannot help). */
function makePng({ width, height }) {
    const seed = Math.floor(Math.random() * 256);
    const rows = [];
    for (let y = 0; y < height; y++) {
        const row = Buffer.alloc(1 + width * 3);
        for (let x = 0; x < width; x++) {
            row[1 + x * 3] = (x + seed) & 255;
            row[2 + x * 3] = y & 255;
            row[3 + x * 3] = (x ^ y) & 255;
        }
        rows.push(row);
    }
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(width, 0);
    ihdr.writeUInt32BE(height, 4);
    ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, no interlace
    return Buffer.concat([
        Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
        pngChunk("IHDR", ihdr),
        pngChunk("IDAT", zlib.deflateSync(Buffer.concat(rows))),
        pngChunk("IEND", Buffer.alloc(0)),
    ]);
}

/** Width and height of a PNG or JPEG, or null. */
function imageSize(buf) {
    if (buf.length > 24 && buf.readUInt32BE(0) === 0x89504e47) {
        return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
    }
    if (buf[0] === 0xff && buf[1] === 0xd8) {
        let i = 2;
        while (i + 9 < buf.length && buf[i] === 0xff) {
            const marker = buf[i + 1];
            const len = buf.readUInt16BE(i + 2);
            // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC).
            if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
                return { height: buf.readUInt16BE(i + 5), width: buf.readUInt16BE(i + 7) };
            }
            i += 2 + len;
        }
    }
    return null;
}

const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");

/** GET with bob's token (or none); the body as a Buffer, and the headers. */
async function fetchMedia(url, token) {
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    const r = await fetch(url, { headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
}

function checkSafeHeaders(res, what) {
    const csp = res.headers.get("content-security-policy") ?? "";
    if (!csp.startsWith("sandbox") || !csp.includes("default-src 'none'")) {
        problem(`${what}: Content-Security-Policy is "${csp}", expected a sandbox with default-src 'none'`);
    }
    if (res.headers.get("x-content-type-options") !== "nosniff") {
        problem(`${what}: X-Content-Type-Options is "${res.headers.get("x-content-type-options")}", expected nosniff`);
    }
}

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------
async function startClient(name, creds) {
    const client = sdk.createClient({
        baseUrl: BASE_URL,
        userId: creds.userId,
        accessToken: creds.accessToken,
        deviceId: creds.deviceId,
    });
    clients.push(client);
    let prepared = false;
    client.on(sdk.ClientEvent.Sync, (state) => {
        if (state === sdk.SyncState.Prepared) prepared = true;
    });
    await call(client.startClient({ initialSyncLimit: 20 }), `${name}: startClient`);
    await waitUntil(() => prepared, REQUEST_TIMEOUT_MS, `${name}: sync state PREPARED`);
    return client;
}

async function scenario() {
    setStep("start the server");
    startServer();
    await waitForVersions();
    const suffix = Math.random().toString(36).slice(2, 8);

    setStep("register and start both clients");
    const aliceCreds = await register(`alice_${suffix}`);
    const bobCreds = await register(`bob_${suffix}`);
    const alice = await startClient("alice", aliceCreds);
    const bob = await startClient("bob", bobCreds);

    setStep("a DM");
    const { room_id: roomId } = await call(
        alice.createRoom({ is_direct: true, invite: [bobCreds.userId], preset: "trusted_private_chat" }),
        "alice: createRoom",
    );
    await waitUntil(() => bob.getRoom(roomId)?.getMyMembership() === "invite", OBSERVE_TIMEOUT_MS, "bob: the invite");
    await call(bob.joinRoom(roomId), "bob: join");

    setStep("alice uploads a photo and sends it as m.image");
    const photo = makePng(PHOTO);
    const upload = await call(alice.uploadContent(photo, { type: "image/png", name: "photo.png" }), "alice: uploadContent");
    const mxc = upload?.content_uri;
    if (typeof mxc !== "string" || !mxc.startsWith("mxc://localhost/")) {
        throw new FatalError(`uploadContent returned ${safeJson(upload)}, expected an mxc://localhost/ URI`);
    }
    const sent = await call(
        alice.sendMessage(roomId, {
            msgtype: "m.image",
            body: "photo.png",
            url: mxc,
            info: { mimetype: "image/png", size: photo.length, w: PHOTO.width, h: PHOTO.height },
        }),
        "alice: send m.image",
    );

    setStep("bob sees the m.image and downloads it");
    await waitUntil(
        () => bob.getRoom(roomId)?.findEventById(sent.event_id),
        OBSERVE_TIMEOUT_MS,
        "bob: alice's m.image in his timeline",
    );
    const event = bob.getRoom(roomId).findEventById(sent.event_id);
    const content = event.getContent();
    if (content.msgtype !== "m.image" || content.url !== mxc) {
        problem(`bob's copy of the message: ${safeJson(content)}, expected m.image with url ${mxc}`);
    }
    // allowDirectLinks=false, allowRedirects=true, useAuthentication=true: what Element does.
    const downloadUrl = bob.mxcUrlToHttp(content.url, undefined, undefined, undefined, false, true, true);
    if (!downloadUrl?.includes("/_matrix/client/v1/media/download/")) {
        throw new FatalError(`mxcUrlToHttp gave ${downloadUrl}, expected an authenticated download URL`);
    }
    const download = await fetchMedia(downloadUrl, bobCreds.accessToken);
    if (download.status !== 200) {
        throw new FatalError(`GET ${downloadUrl}: HTTP ${download.status} ${download.body.toString().slice(0, 300)}`);
    }
    if (sha256(download.body) !== sha256(photo)) {
        problem(`the downloaded photo differs from the upload (${download.body.length} vs ${photo.length} bytes)`);
    }
    if (download.headers.get("content-type") !== "image/png") {
        problem(`download Content-Type is ${download.headers.get("content-type")}, expected image/png`);
    }
    const disposition = download.headers.get("content-disposition") ?? "";
    if (!disposition.startsWith("inline") || !disposition.includes("photo.png")) {
        problem(`download Content-Disposition is "${disposition}", expected inline with filename photo.png`);
    }
    checkSafeHeaders(download, "download");
    out(`  bob downloaded ${download.body.length} bytes, identical to the upload`);

    setStep("bob fetches thumbnails");
    for (const [w, h, method, expected] of [
        [96, 96, "crop", { width: 96, height: 96 }],
        [320, 240, "scale", { width: 320, height: 240 }],
    ]) {
        const url = bob.mxcUrlToHttp(content.url, w, h, method, false, true, true);
        if (!url?.includes("/_matrix/client/v1/media/thumbnail/")) {
            problem(`mxcUrlToHttp(${w}x${h} ${method}) gave ${url}, expected an authenticated thumbnail URL`);
            continue;
        }
        const thumb = await fetchMedia(url, bobCreds.accessToken);
        const size = imageSize(thumb.body);
        if (thumb.status !== 200 || !thumb.headers.get("content-type")?.startsWith("image/")) {
            problem(`thumbnail ${w}x${h} ${method}: HTTP ${thumb.status}, Content-Type ${thumb.headers.get("content-type")}`);
        } else if (size?.width !== expected.width || size?.height !== expected.height) {
            problem(`thumbnail ${w}x${h} ${method} is ${safeJson(size)}, expected ${safeJson(expected)}`);
        } else {
            out(`  thumbnail ${w}x${h} ${method}: ${thumb.headers.get("content-type")} ${size.width}x${size.height}, ${thumb.body.length} bytes`);
        }
        checkSafeHeaders(thumb, `thumbnail ${w}x${h} ${method}`);
    }

    setStep("the media is not public");
    const anonymous = await fetchMedia(downloadUrl, null);
    if (anonymous.status !== 401) problem(`download without a token: HTTP ${anonymous.status}, expected 401`);
    const [server, mediaId] = mxc.slice("mxc://".length).split("/");
    const legacy = await api("GET", `/_matrix/media/v3/download/${server}/${mediaId}`);
    if (legacy.status !== 404 || legacy.json?.errcode !== "M_NOT_FOUND") {
        problem(`frozen legacy download of new media: HTTP ${legacy.status} ${legacy.text.slice(0, 200)}, expected 404 M_NOT_FOUND`);
    }
}

await run(scenario, {
    stopClients: () => clients.forEach((c) => c.stopClient()),
    summary: (ms) => `conformance js-sdk media: upload, m.image, download and thumbnails, ${ms} ms`,
});
