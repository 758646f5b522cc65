// Minimal protobuf wire format: just what onnx.proto needs (no zigzag, no groups, no maps).
// Spec: https://protobuf.dev/programming-guides/encoding/

export const WireType = { VARINT: 0, FIXED64: 1, LEN: 2, FIXED32: 5 } as const;
export type WireTypeCode = (typeof WireType)[keyof typeof WireType];

/** Payloads at least this large are kept as references, never copied until finish(). */
const BIG_BYTES = 1024;
// Writers start small (one per sub-message, and models have many small messages) and double
// their scratch up to MAX_SCRATCH as they grow.
const MIN_SCRATCH = 64;
const MAX_SCRATCH = 65536;
const TWO_32 = 4294967296;

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * Append-only writer. Small fields go into a scratch buffer; big byte payloads (raw_data of
 * weights) and finished sub-messages are kept as chunk references, so each byte of a large
 * model is copied exactly once, in finish().
 */
export class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private flushed = 0; // bytes held in `chunks`
  private buf = new Uint8Array(MIN_SCRATCH);
  private view = new DataView(this.buf.buffer);
  private pos = 0;

  /** Bytes written so far. */
  get length(): number {
    return this.flushed + this.pos;
  }

  private flush(): void {
    if (this.pos === 0) return;
    this.chunks.push(this.buf.subarray(0, this.pos));
    this.flushed += this.pos;
    // The flushed part stays referenced by `chunks`; continue in the rest of the same buffer
    // when there is room, else in a fresh one.
    if (this.buf.length - this.pos >= 16) {
      this.buf = this.buf.subarray(this.pos);
      this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    } else {
      this.newScratch(0);
    }
    this.pos = 0;
  }

  private newScratch(atLeast: number): void {
    const size = Math.max(atLeast, Math.min(this.buf.buffer.byteLength * 2, MAX_SCRATCH));
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.flush();
    if (n > this.buf.length) this.newScratch(n);
  }

  private pushChunk(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.flush();
    this.chunks.push(bytes);
    this.flushed += bytes.length;
  }

  tag(field: number, wire: WireTypeCode): void {
    this.varint(field * 8 + wire);
  }

  /**
   * Unsigned or signed (int32/int64) varint. Negative values are written as 64-bit two's
   * complement (10 bytes), which is what protobuf does for negative int32 and int64 alike.
   */
  varint(v: number | bigint): void {
    if (typeof v === "number") {
      if (!Number.isInteger(v)) throw new Error(`ONNX encode: integer field got non-integer ${v}`);
      if (v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
        this.ensure(10);
        // Bit ops are 32-bit in JS, so peel 7 bits at a time by division above 2^31.
        while (v > 0x7fffffff) {
          this.buf[this.pos++] = (v % 128) | 0x80;
          v = Math.floor(v / 128);
        }
        while (v > 0x7f) {
          this.buf[this.pos++] = (v & 0x7f) | 0x80;
          v >>>= 7;
        }
        this.buf[this.pos++] = v;
        return;
      }
      if (!Number.isSafeInteger(v)) {
        throw new Error(`ONNX encode: integer ${v} is not exactly representable; pass a bigint`);
      }
      v = BigInt(v);
    }
    if (v < -(1n << 63n) || v >= 1n << 64n) {
      throw new Error(`ONNX encode: integer ${v} does not fit in 64 bits`);
    }
    let u = BigInt.asUintN(64, v);
    this.ensure(10);
    while (u > 0x7fn) {
      this.buf[this.pos++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.buf[this.pos++] = Number(u);
  }

  float(v: number): void {
    this.ensure(4);
    this.view.setFloat32(this.pos, v, true);
    this.pos += 4;
  }

  double(v: number): void {
    this.ensure(8);
    this.view.setFloat64(this.pos, v, true);
    this.pos += 8;
  }

  /** Length-delimited payload. Large payloads are referenced, not copied: don't mutate them before finish(). */
  bytes(v: Uint8Array): void {
    this.varint(v.length);
    if (v.length >= BIG_BYTES) {
      this.pushChunk(v);
    } else {
      this.ensure(v.length);
      this.buf.set(v, this.pos);
      this.pos += v.length;
    }
  }

  // ---- field helpers: tag + value ----

  uint64Field(field: number, v: number | bigint): void {
    this.tag(field, WireType.VARINT);
    this.varint(v);
  }

  floatField(field: number, v: number): void {
    this.tag(field, WireType.FIXED32);
    this.float(v);
  }

  doubleField(field: number, v: number): void {
    this.tag(field, WireType.FIXED64);
    this.double(v);
  }

  bytesField(field: number, v: Uint8Array): void {
    this.tag(field, WireType.LEN);
    this.bytes(v);
  }

  stringField(field: number, v: string): void {
    this.bytesField(field, utf8Encoder.encode(v));
  }

  /** Writes a sub-message built by `build` into a child writer, then adopts its chunks (no copy). */
  messageField(field: number, build: (w: ProtoWriter) => void): void {
    const child = new ProtoWriter();
    build(child);
    child.flush();
    this.tag(field, WireType.LEN);
    this.varint(child.flushed);
    this.flush();
    for (const c of child.chunks) this.chunks.push(c);
    this.flushed += child.flushed;
  }

  /** One tag per element (proto2's default for repeated scalars, e.g. dims, AttributeProto.ints). */
  unpackedVarints(field: number, values: readonly (number | bigint)[]): void {
    for (const v of values) this.uint64Field(field, v);
  }

  unpackedFloats(field: number, values: readonly number[]): void {
    for (const v of values) this.floatField(field, v);
  }

  /** One LEN field holding all elements ([packed = true], e.g. TensorProto.float_data). */
  packedVarints(field: number, values: readonly (number | bigint)[]): void {
    if (values.length === 0) return;
    this.messageField(field, (w) => {
      for (const v of values) w.varint(v);
    });
  }

  packedFloats(field: number, values: readonly number[] | Float32Array): void {
    if (values.length === 0) return;
    this.tag(field, WireType.LEN);
    this.varint(values.length * 4);
    this.ensure(values.length * 4);
    for (let i = 0; i < values.length; i++) this.view.setFloat32(this.pos + i * 4, values[i]!, true);
    this.pos += values.length * 4;
  }

  packedDoubles(field: number, values: readonly number[] | Float64Array): void {
    if (values.length === 0) return;
    this.tag(field, WireType.LEN);
    this.varint(values.length * 8);
    this.ensure(values.length * 8);
    for (let i = 0; i < values.length; i++) this.view.setFloat64(this.pos + i * 8, values[i]!, true);
    this.pos += values.length * 8;
  }

  /** The chunks written so far, in order (e.g. to stream to a file without one big buffer). */
  finishChunks(): Uint8Array[] {
    this.flush();
    return this.chunks;
  }

  /** Concatenates everything once. */
  finish(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.flushed);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

export class ProtoDecodeError extends Error {
  constructor(message: string) {
    super(`ONNX decode: ${message}`);
    this.name = "ProtoDecodeError";
  }
}

/**
 * Cursor over a byte buffer. Sub-messages are read in place by narrowing `limit`
 * (see message()), so byte offsets in errors are offsets in the whole input.
 */
export class ProtoReader {
  readonly bytes: Uint8Array;
  private readonly view: DataView;
  pos = 0;
  limit: number;
  /** Name of the message being read, for error messages. */
  context = "input";
  // Low and high 32 bits of the last varint read by varintParts().
  private lo = 0;
  private hi = 0;

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.limit = bytes.length;
  }

  fail(message: string): never {
    throw new ProtoDecodeError(`${message} (in ${this.context})`);
  }

  get done(): boolean {
    return this.pos >= this.limit;
  }

  /** Reads a varint into lo/hi (unsigned 32-bit halves). */
  private varintParts(): void {
    const start = this.pos;
    const b = this.bytes;
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.limit) this.fail(`truncated varint at byte ${start}`);
      const byte = b[this.pos++]!;
      const bits = byte & 0x7f;
      if (i < 4) lo |= bits << (7 * i);
      else if (i === 4) {
        lo |= (bits & 0x0f) << 28;
        hi = bits >>> 4;
      } else hi |= bits << (7 * i - 32);
      if (byte < 0x80) {
        this.lo = lo >>> 0;
        this.hi = hi >>> 0;
        return;
      }
    }
    this.fail(`malformed varint (longer than 10 bytes) at byte ${start}`);
  }

  /** A tag: returns field number and sets `wire`. */
  wire: number = 0;
  tag(): number {
    const at = this.pos;
    this.varintParts();
    if (this.hi !== 0) this.fail(`malformed tag at byte ${at}`);
    const field = this.lo >>> 3;
    this.wire = this.lo & 7;
    if (field === 0) this.fail(`malformed tag (field number 0) at byte ${at}`);
    return field;
  }

  /** int32 / enum: protobuf writes negatives sign-extended to 64 bits; keep the low 32. */
  int32(): number {
    this.varintParts();
    return this.lo | 0;
  }

  /** int64 that must fit a JS number (dims, versions): errors instead of silently rounding. */
  int64Number(): number {
    const at = this.pos;
    this.varintParts();
    const v = (this.hi | 0) * TWO_32 + this.lo;
    if (!Number.isSafeInteger(v)) this.fail(`int64 at byte ${at} is outside the safe integer range`);
    return v;
  }

  /** int64 as a number when exact, else a bigint (AttributeProto.i / ints). */
  int64NumberOrBigInt(): number | bigint {
    this.varintParts();
    const v = (this.hi | 0) * TWO_32 + this.lo;
    if (Number.isSafeInteger(v)) return v;
    return BigInt.asIntN(64, (BigInt(this.hi) << 32n) | BigInt(this.lo));
  }

  int64BigInt(): bigint {
    this.varintParts();
    return BigInt.asIntN(64, (BigInt(this.hi) << 32n) | BigInt(this.lo));
  }

  uint64BigInt(): bigint {
    this.varintParts();
    return (BigInt(this.hi) << 32n) | BigInt(this.lo);
  }

  private need(n: number, what: string): void {
    if (this.pos + n > this.limit) {
      this.fail(`truncated ${what} at byte ${this.pos}: needs ${n} bytes, ${this.limit - this.pos} left`);
    }
  }

  float(): number {
    this.need(4, "fixed32");
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  double(): number {
    this.need(8, "fixed64");
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /** Length prefix of a LEN field, checked against the enclosing message's end. */
  private length(): number {
    const at = this.pos;
    this.varintParts();
    const n = this.hi * TWO_32 + this.lo;
    if (this.pos + n > this.limit) {
      this.fail(`length-delimited field at byte ${at} claims ${n} bytes, only ${this.limit - this.pos} left (truncated?)`);
    }
    return n;
  }

  /** A view into the input, not a copy. */
  bytesView(): Uint8Array {
    const n = this.length();
    const v = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  string(): string {
    return utf8Decoder.decode(this.bytesView());
  }

  /** Reads a length-delimited sub-message in place: `read` sees `limit` set to its end. */
  message<T>(context: string, read: (r: ProtoReader) => T): T {
    const n = this.length();
    const savedLimit = this.limit;
    const savedContext = this.context;
    this.limit = this.pos + n;
    this.context = context;
    const v = read(this);
    if (this.pos !== this.limit) this.fail(`message ends at byte ${this.pos}, expected ${this.limit}`);
    this.limit = savedLimit;
    this.context = savedContext;
    return v;
  }

  /** Requires the current field's wire type; a mismatch means the bytes aren't this message. */
  expect(field: string, wire: WireTypeCode): void {
    if (this.wire !== wire) {
      this.fail(`field ${field} has wire type ${this.wire}, expected ${wire} (at byte ${this.pos})`);
    }
  }

  /**
   * One repeated scalar field occurrence, packed or not: writers differ (proto2 onnx.proto packs
   * float_data but not dims or AttributeProto.ints, yet any parser must accept both forms).
   */
  repeated<T>(field: string, elementWire: WireTypeCode, readOne: () => T, out: T[]): void {
    if (this.wire === WireType.LEN) {
      const n = this.length();
      const end = this.pos + n;
      const savedLimit = this.limit;
      this.limit = end;
      while (this.pos < end) out.push(readOne());
      this.limit = savedLimit;
      if (this.pos !== end) this.fail(`packed field ${field} overruns its length at byte ${this.pos}`);
    } else {
      this.expect(field, elementWire);
      out.push(readOne());
    }
  }

  /** Skips a field we don't model (training_info, functions, segment, denotation, ...). */
  skip(field: number): void {
    const at = this.pos;
    switch (this.wire) {
      case WireType.VARINT:
        this.varintParts();
        return;
      case WireType.FIXED64:
        this.need(8, "fixed64");
        this.pos += 8;
        return;
      case WireType.LEN:
        this.pos += this.length();
        return;
      case WireType.FIXED32:
        this.need(4, "fixed32");
        this.pos += 4;
        return;
      default:
        this.fail(`unsupported wire type ${this.wire} for field ${field} near byte ${at}`);
    }
  }
}
