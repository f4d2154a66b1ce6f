// Starts the Firestore API server (@firestore-emulator/server, installed into .tools/ by `make`) on a port.
// Usage: node scripts/firestore-emulator.mjs PORT   -- prints "ready PORT" once it accepts connections.
//
// The package leaves ListDocuments and ListCollectionIds unimplemented (the handlers throw). The tenant document
// store lists collections with ListDocuments(show_missing) to find documents whose parent document does not exist,
// and names the subcollections under such a parent with ListCollectionIds, so both are implemented here over the
// package's in-memory state, with Firestore's semantics: a document is "missing" when it does not exist but has
// documents somewhere beneath it; a collection is listed when it holds such a document or an existing one.
// Options this server cannot honour (read times, transactions, other orderings) are refused, never ignored.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, ".tools", "package.json"));
const { FirestoreServer } = require("@firestore-emulator/server");
// its own dependencies, resolved from where it is installed: the same gRPC module and message classes it uses
const requireDep = createRequire(require.resolve("@firestore-emulator/server"));
const grpc = requireDep("@grpc/grpc-js");
const v1 = requireDep("@firestore-emulator/proto/dist/google/firestore/v1/firestore");

const DEFAULT_PAGE = 300;

class RpcError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
    this.details = message;
  }
}

const invalid = (message) => new RpcError(grpc.status.INVALID_ARGUMENT, message);
const unsupported = (message) =>
  new RpcError(grpc.status.UNIMPLEMENTED, `${message} (not supported by this local server)`);

// Firestore orders document ids and collection ids by their UTF-8 bytes.
const byUtf8 = (a, b) => Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));

// The package keeps each node's children in a `collections` object; it is private in its TypeScript source, so
// check its shape rather than trust it (a changed package version fails here, loudly, not with wrong answers).
function collectionsOf(node) {
  const children = node.collections;
  if (children === null || typeof children !== "object") {
    throw new Error("@firestore-emulator/server internals changed (no `collections` on a document or database); "
      + "update scripts/firestore-emulator.mjs for this version");
  }
  return Object.values(children);
}

// `projects/P/databases/D/documents` or a document path below it; anything else is refused.
function parentNode(state, parent) {
  const segments = typeof parent === "string" ? parent.split("/") : [];
  if (segments.length < 5 || segments[0] !== "projects" || segments[2] !== "databases" || segments[4] !== "documents"
      || segments.some((s) => s === "") || (segments.length - 5) % 2 !== 0) {
    throw invalid(`parent ${JSON.stringify(parent)} is not projects/{project}/databases/{database}/documents or a `
      + "document path below it");
  }
  if (segments.length === 5) return state.getProject(segments[1]).getDatabase(segments[3]);
  return state.getDocument(parent);
}

function pageOf(items, pageSize, pageToken, key) {
  let start = 0;
  if (pageToken) {
    const after = Buffer.from(pageToken, "base64url").toString("utf8");
    start = items.findIndex((item) => byUtf8(key(item), after) > 0);
    if (start < 0) start = items.length;
  }
  const size = pageSize > 0 ? pageSize : DEFAULT_PAGE;
  const page = items.slice(start, start + size);
  const more = start + size < items.length;
  return { page, next: more ? Buffer.from(key(page[page.length - 1]), "utf8").toString("base64url") : "" };
}

function masked(fields, mask) {
  if (!mask) return fields;
  for (const p of mask.field_paths) {
    if (p.includes(".") || p.includes("`")) {
      throw unsupported(`mask field path ${JSON.stringify(p)}: only top-level fields`);
    }
  }
  const keep = new Set(mask.field_paths);
  return Object.fromEntries(Object.entries(fields).filter(([name]) => keep.has(name)));
}

function listDocuments(state, request) {
  if (request.has_read_time || request.has_transaction) {
    throw unsupported("ListDocuments with a read time or transaction");
  }
  if (request.order_by) {
    if (request.show_missing) throw invalid("requests with show_missing may not specify order_by");
    if (!/^\s*__name__(\s+asc)?\s*$/i.test(request.order_by)) {
      throw unsupported(`order_by ${JSON.stringify(request.order_by)}`);
    }
  }
  if (!request.collection_id) throw unsupported("ListDocuments without a collection_id");
  if (request.collection_id.includes("/")) {
    throw invalid(`collection_id ${JSON.stringify(request.collection_id)} contains '/'`);
  }
  const node = parentNode(state, request.parent);
  const collection = node.getCollection(request.collection_id);
  const docs = collection.getAllDocuments()
    .filter((d) => d.metadata.hasExist || (request.show_missing && d.hasChild()))
    .sort((a, b) => byUtf8(a.name, b.name));
  const { page, next } = pageOf(docs, request.page_size, request.page_token, (d) => d.name);
  const mask = request.has_mask ? request.mask : null;
  return v1.ListDocumentsResponse.fromObject({
    documents: page.map((d) => {
      if (!d.metadata.hasExist) return { name: d.getPath() };   // missing: a key only, no fields or times
      const doc = d.toV1DocumentObject();
      return { ...doc, fields: masked(doc.fields, mask) };
    }),
    next_page_token: next,
  });
}

function listCollectionIds(state, request) {
  if (request.has_read_time) throw unsupported("ListCollectionIds with a read time");
  const ids = collectionsOf(parentNode(state, request.parent))
    .filter((c) => c.hasChild())
    .map((c) => c.name)
    .sort(byUtf8);
  const { page, next } = pageOf(ids, request.page_size, request.page_token, (id) => id);
  return v1.ListCollectionIdsResponse.fromObject({ collection_ids: page, next_page_token: next });
}

function unary(method) {
  return (call, callback) => {
    try {
      callback(null, method(call.request));
    } catch (err) {
      if (err instanceof RpcError) {
        callback(err, null);
      } else if (err instanceof Error && /^Invalid path/.test(err.message)) {
        callback(invalid(err.message), null);
      } else {
        console.error(err);
        callback(new RpcError(grpc.status.INTERNAL, String(err?.message ?? err)), null);
      }
    }
  };
}

// Replace the package's throwing handlers on its own gRPC server (grpc-js register/unregister are public API).
function implement(server, handlers) {
  const rpc = server.server;
  if (!(rpc instanceof grpc.Server) || typeof server.state?.getDocument !== "function") {
    throw new Error("@firestore-emulator/server internals changed (no gRPC server or state on FirestoreServer); "
      + "update scripts/firestore-emulator.mjs for this version");
  }
  for (const [name, method] of Object.entries(handlers)) {
    const d = v1.UnimplementedFirestoreService.definition[name];
    rpc.unregister(d.path);
    if (!rpc.register(d.path, unary(method), d.responseSerialize, d.requestDeserialize, "unary")) {
      throw new Error(`cannot register ${d.path}`);
    }
  }
}

const port = Number(process.argv[2] || 8080);
const server = new FirestoreServer();
implement(server, {
  ListDocuments: (request) => listDocuments(server.state, request),
  ListCollectionIds: (request) => listCollectionIds(server.state, request),
});
await server.start(port);
console.log(`ready ${port}`);
const stop = async () => { try { await server.stop?.(); } finally { process.exit(0); } };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
