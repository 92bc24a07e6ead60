// Shared machinery of the matrix-js-sdk conformance scenarios (scenario.mjs, messenger.mjs, ...):
// console silencing, arguments, problem reporting, bounded waits, the server process,
// raw HTTP, registration, and the run/finish logic with its global timeout.
//
// A scenario is run as
//   node <scenario>.mjs <corvid-binary> <workdir> <config-file> <port>
// and starts the server itself (cwd = workdir, `serve --config <config-file>`), or, when its
// servers are already running (e2ee_federated.mjs), as
//   node <scenario>.mjs --servers <arguments of the scenario's own>
//
// Environment:
//   JS_CONFORMANCE_VERBOSE=1   let the SDK log to the console (normally silenced)
//   JS_CONFORMANCE_TIMEOUT_S=S global timeout (default 240)

import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

// ---------------------------------------------------------------------------
// Output: our own lines go straight to stdout/stderr; the SDK's console output
// is silenced (kept in a ring buffer that is printed on failure).
// ---------------------------------------------------------------------------
export const out = (line) => process.stdout.write(line + "\n");
const VERBOSE = process.env.JS_CONFORMANCE_VERBOSE === "1";
const sdkLog = [];
if (!VERBOSE) {
    for (const level of ["log", "info", "debug", "warn", "error", "trace"]) {
        console[level] = (...args) => {
            const text = args
                .map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === "string" ? a : safeJson(a)))
                .join(" ");
            sdkLog.push(`[${level}] ${text}`.slice(0, 500));
            if (sdkLog.length > 200) sdkLog.shift();
        };
    }
}
export function safeJson(v) {
    try {
        return JSON.stringify(v);
    } catch {
        return String(v);
    }
}

// The SDK binds console methods when its logger is created, so import it only
// after console has been stubbed.
export const sdk = await import("matrix-js-sdk");

// ---------------------------------------------------------------------------
// Arguments and constants
// ---------------------------------------------------------------------------
const args = process.argv.slice(2);
/** The scenario's own arguments when it is given running servers (`--servers ...`), else null. */
export const SERVER_ARGS = args[0] === "--servers" ? args.slice(1) : null;
const [binary, workdir, configPath, portArg] = SERVER_ARGS ? [] : args;
if (!SERVER_ARGS && (!binary || !workdir || !configPath || !portArg)) {
    process.stderr.write(`usage: node ${path.basename(process.argv[1] ?? "scenario.mjs")} <corvid-binary> <workdir> <config-file> <port>\n`);
    process.exit(2);
}
export const BASE_URL = SERVER_ARGS ? null : `http://127.0.0.1:${Number(portArg)}`;
export const GLOBAL_TIMEOUT_MS = Number(process.env.JS_CONFORMANCE_TIMEOUT_S ?? 240) * 1000;
export const REQUEST_TIMEOUT_MS = 30_000;
const SERVER_START_TIMEOUT_MS = 30_000;
const SERVER_STOP_TIMEOUT_MS = 30_000;
export const PASSWORD = "conformance-password-" + Math.random().toString(36).slice(2);
export const WORKDIR = workdir;
export const SERVER_LOG = SERVER_ARGS ? null : path.join(workdir, "server.log");
const PID_FILE = SERVER_ARGS ? null : path.join(workdir, "server.pid");

export const problems = []; // assertion failures (the scenario continues and reports all of them)
export const notes = []; // informational remarks (do not fail the run)
let step = "init";
export const t0 = Date.now();

/** The current step's name (set by `setStep`). */
export function currentStep() {
    return step;
}

export function problem(msg) {
    problems.push(msg);
    out(`  FAIL: ${msg}`);
}
export function note(msg) {
    notes.push(msg);
    out(`  note: ${msg}`);
}
export function setStep(s) {
    step = s;
    out(`- ${s}`);
}

export class FatalError extends Error {}

export async function withTimeout(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new FatalError(`${what}: no answer within ${ms} ms`)), ms);
    });
    try {
        return await Promise.race([promise, timeout]);
    } finally {
        clearTimeout(timer);
    }
}

/** `promise`'s value; a FatalError naming `what` when it fails or takes over REQUEST_TIMEOUT_MS. */
export async function call(promise, what) {
    try {
        return await withTimeout(promise, REQUEST_TIMEOUT_MS, what);
    } catch (e) {
        throw new FatalError(`${what} failed: ${describeError(e)}`);
    }
}

/** A client with Rust crypto (in-memory store) made with `options`, added to `clients` (to be
 *  stopped at the end), started and synced. */
export async function startCryptoClient(label, options, clients) {
    let prepared = false;
    const client = sdk.createClient(options);
    clients.push(client);
    client.on(sdk.ClientEvent.Sync, (state) => {
        if (state === sdk.SyncState.Prepared) prepared = true;
    });
    await call(client.initRustCrypto({ useIndexedDB: false }), `${label}: initRustCrypto`);
    await call(client.startClient({ initialSyncLimit: 30 }), `${label}: startClient`);
    await waitUntil(() => prepared, REQUEST_TIMEOUT_MS, `${label}: sync state PREPARED`, 100);
    return client;
}

/** bootstrapCrossSigning's upload: without auth first; with the password when the server asks
 *  for it (as Element asks the user). */
export function uploadSigningKeysWithPassword(client) {
    return async (makeRequest) => {
        try {
            await makeRequest(null);
        } catch (e) {
            const session = e?.data?.session;
            if (!session) throw e;
            await makeRequest({
                type: "m.login.password",
                identifier: { type: "m.id.user", user: client.getUserId() },
                password: PASSWORD,
                session,
            });
        }
    };
}

/** The event's plaintext body on `device` ({ client, label }), decrypting it if needed; null
 *  while it cannot. */
export async function clearBody(device, roomId, eventId) {
    const ev = device.client.getRoom(roomId)?.findEventById(eventId);
    if (!ev) return null;
    await device.client.decryptEventIfNeeded(ev);
    if (ev.isDecryptionFailure()) return null;
    return ev.getClearContent()?.body ?? null;
}

/** Whether the event decrypts to `body` on `device` within `ms`; a problem saying what it got
 *  instead when not. */
export async function expectDecrypted(device, roomId, eventId, body, ms = 30_000) {
    let seen = null;
    try {
        const decrypts = async () => (seen = await clearBody(device, roomId, eventId)) === body;
        await waitUntil(decrypts, ms, `${device.label}: decrypts "${body}"`, 100);
        return true;
    } catch {
        const ev = device.client.getRoom(roomId)?.findEventById(eventId);
        problem(
            `${device.label}: event ${eventId} should decrypt to "${body}"; got ${safeJson(seen)}` +
                (ev ? ` (type ${ev.getWireType()}, failure: ${ev.decryptionFailureReason ?? "none"})` : " (not in the timeline)"),
        );
        return false;
    }
}

/** Polls `cond` (sync or async) until it is truthy, or fails after `ms`. */
export async function waitUntil(cond, ms, what, intervalMs = 50) {
    const deadline = Date.now() + ms;
    for (;;) {
        if (await cond()) return;
        if (Date.now() > deadline) throw new FatalError(`${what}: not reached within ${ms} ms`);
        await sleep(intervalMs);
    }
}

export function describeError(e) {
    if (!e) return String(e);
    const parts = [];
    if (e.httpStatus) parts.push(`HTTP ${e.httpStatus}`);
    if (e.errcode) parts.push(e.errcode);
    if (e.data && typeof e.data === "object") parts.push(safeJson(e.data));
    parts.push(e.message ?? String(e));
    return parts.join(" ");
}

// ---------------------------------------------------------------------------
// Server process management
// ---------------------------------------------------------------------------
let server = null; // { proc, exited: Promise<{code, signal}>, exitInfo }
let finished = false; // the final report has started: no more server starts

/** The server reads CORVID_* variables as config overrides: drop them so that the config
 *  file written by run.sh is exactly what the server runs with. */
function serverEnv() {
    const env = { NO_COLOR: "1" };
    for (const [k, v] of Object.entries(process.env)) {
        if (!k.startsWith("CORVID_")) env[k] = v;
    }
    return env;
}

export function startServer() {
    if (finished) throw new FatalError("scenario already finished"); // e.g. after the global timeout
    if (SERVER_ARGS) throw new FatalError("startServer: the scenario was given running servers");
    const logFd = fs.openSync(SERVER_LOG, "a");
    fs.writeSync(logFd, `\n===== starting ${binary} serve --config ${configPath} at ${new Date().toISOString()} =====\n`);
    const proc = spawn(binary, ["serve", "--config", configPath], {
        cwd: workdir,
        stdio: ["ignore", logFd, logFd],
        env: serverEnv(),
    });
    fs.closeSync(logFd);
    const s = { proc, exitInfo: null, spawnError: null };
    s.exited = new Promise((resolve) => {
        proc.on("exit", (code, signal) => {
            s.exitInfo = { code, signal };
            resolve(s.exitInfo);
        });
        proc.on("error", (err) => {
            s.spawnError = err;
            s.exitInfo = { code: null, signal: null, error: err };
            resolve(s.exitInfo);
        });
    });
    if (proc.pid) fs.writeFileSync(PID_FILE, String(proc.pid));
    server = s;
    return s;
}

export async function waitForVersions() {
    const deadline = Date.now() + SERVER_START_TIMEOUT_MS;
    let lastErr = "";
    for (;;) {
        if (server.exitInfo) {
            throw new FatalError(
                `server exited during startup (${safeJson(server.exitInfo)}${server.spawnError ? ": " + server.spawnError.message : ""})`,
            );
        }
        try {
            const r = await fetch(`${BASE_URL}/_matrix/client/versions`, { signal: AbortSignal.timeout(2000) });
            if (r.status === 200) {
                const body = await r.json();
                if (!Array.isArray(body.versions)) {
                    problem(`GET /_matrix/client/versions: "versions" is not an array: ${safeJson(body)}`);
                }
                return body;
            }
            lastErr = `HTTP ${r.status}`;
        } catch (e) {
            lastErr = e.cause?.code ?? e.message;
        }
        if (Date.now() > deadline) {
            throw new FatalError(
                `GET ${BASE_URL}/_matrix/client/versions did not answer 200 within ${SERVER_START_TIMEOUT_MS} ms (last: ${lastErr})`,
            );
        }
        await sleep(100);
    }
}

export async function stopServer({ strict = true } = {}) {
    if (!server || server.exitInfo) return;
    const s = server;
    s.proc.kill("SIGTERM");
    const info = await Promise.race([s.exited, sleep(SERVER_STOP_TIMEOUT_MS).then(() => null)]);
    if (!info) {
        s.proc.kill("SIGKILL");
        await s.exited;
        if (strict) problem(`server did not exit within ${SERVER_STOP_TIMEOUT_MS} ms after SIGTERM (killed with SIGKILL)`);
        return;
    }
    if (strict && !(info.code === 0 && info.signal === null)) {
        problem(`server did not shut down cleanly on SIGTERM: exit ${safeJson(info)} (expected exit code 0)`);
    }
}

export function tail(file, lines) {
    try {
        const text = fs.readFileSync(file, "utf8");
        // eslint-disable-next-line no-control-regex
        return text.replace(/\x1b\[[0-9;]*m/g, "").split("\n").slice(-lines).join("\n");
    } catch (e) {
        return `(cannot read ${file}: ${e.message})`;
    }
}

// ---------------------------------------------------------------------------
// Matrix helpers
// ---------------------------------------------------------------------------
export async function api(method, pathAndQuery, { token, body, base = BASE_URL } = {}) {
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const r = await fetch(base + pathAndQuery, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await r.text();
    let json = null;
    try {
        json = JSON.parse(text);
    } catch {
        /* not JSON */
    }
    return { status: r.status, json, text };
}

/** Registers `username` on the server at `base` (by default the scenario's own Corvid, named
 *  `localhost`). */
export async function register(username, { base = BASE_URL, serverName = "localhost" } = {}) {
    const req = {
        username,
        password: PASSWORD,
        auth: { type: "m.login.dummy" },
        initial_device_display_name: "corvid js-sdk conformance",
    };
    let r = await api("POST", "/_matrix/client/v3/register", { body: req, base });
    if (r.status === 401 && r.json?.session) {
        // The server wants a user-interactive auth session first: complete the dummy stage in it.
        note(`POST /register with auth m.login.dummy but no session answered 401; retrying within session`);
        r = await api("POST", "/_matrix/client/v3/register", {
            body: { ...req, auth: { type: "m.login.dummy", session: r.json.session } },
            base,
        });
    }
    if (r.status !== 200 || !r.json) {
        throw new FatalError(`POST /_matrix/client/v3/register (${username}): HTTP ${r.status} ${r.text.slice(0, 500)}`);
    }
    const { user_id, access_token, device_id } = r.json;
    for (const [k, v] of Object.entries({ user_id, access_token, device_id })) {
        if (typeof v !== "string" || !v) {
            throw new FatalError(`POST /register (${username}): response lacks "${k}": ${r.text.slice(0, 500)}`);
        }
    }
    if (user_id !== `@${username}:${serverName}`) {
        problem(`POST /register: user_id is ${user_id}, expected @${username}:${serverName}`);
    }
    return { userId: user_id, accessToken: access_token, deviceId: device_id };
}

/** A MemoryStore that offers its current sync token as "saved", like a persistent
 *  store (IndexedDB in Element) does: a restarted client resumes /sync with `since`. */
export class ResumableStore extends sdk.MemoryStore {
    getSavedSyncToken() {
        return Promise.resolve(this.getSyncToken());
    }
}

// ---------------------------------------------------------------------------
// Running a scenario: global timeout, interruption, final report
// ---------------------------------------------------------------------------

/**
 * Runs `scenario()` under the global timeout and exits the process with the report.
 * - `stopClients()` stops every SDK client (called before the server is stopped);
 * - `summary()` returns the scenario's summary line (printed first);
 * - `results(failed)` returns `{ passed, failed }` for the final `N passed, M failed` line
 *   (`failed` is true when there were problems); by default 1/0 or 0/1.
 */
export async function run(scenario, { stopClients = () => {}, summary = () => null, results = null } = {}) {
    const globalTimer = setTimeout(() => {
        void finish(1, `global timeout: the scenario did not finish within ${GLOBAL_TIMEOUT_MS / 1000} s (step: ${step})`);
    }, GLOBAL_TIMEOUT_MS);

    process.on("unhandledRejection", (e) => {
        void finish(1, `unhandled rejection: ${describeError(e)}`);
    });
    for (const sig of ["SIGINT", "SIGTERM"]) {
        process.on(sig, () => void finish(1, `interrupted by ${sig}`));
    }

    async function finish(exitCode, reason) {
        if (finished) return;
        finished = true;
        clearTimeout(globalTimer);
        try {
            stopClients();
        } catch {
            /* ignore */
        }
        const ms = Date.now() - t0;
        if (reason) problems.push(reason);
        try {
            await stopServer({ strict: exitCode === 0 && !reason });
        } catch (e) {
            problems.push(`stopping the server: ${e.message}`);
        }
        if (server?.exitInfo === null) server.proc.kill("SIGKILL");
        let line = null;
        try {
            line = summary(ms);
        } catch (e) {
            line = `(summary failed: ${e.message})`;
        }
        if (line) out(line);
        const failed = problems.length > 0;
        const counts = results ? results(failed) : failed ? { passed: 0, failed: 1 } : { passed: 1, failed: 0 };
        if (!failed) {
            out(`${counts.passed} passed, ${counts.failed} failed`);
            process.exit(0);
        }
        out(`FAILED (${problems.length} problem(s), last step: ${step}):`);
        for (const p of problems) out(`  - ${p}`);
        if (SERVER_LOG) {
            out(`--- last lines of ${SERVER_LOG} ---`);
            out(tail(SERVER_LOG, 40));
        }
        if (sdkLog.length) {
            out(`--- last SDK log lines ---`);
            out(sdkLog.slice(-30).join("\n"));
        }
        out(`${counts.passed} passed, ${counts.failed} failed`);
        process.exit(1);
    }

    try {
        await scenario();
        await finish(problems.length ? 1 : 0);
    } catch (e) {
        const msg = e instanceof FatalError ? e.message : `unexpected error: ${e?.stack ?? e}`;
        await finish(1, msg);
    }
}
