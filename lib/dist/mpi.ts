// Open MPI's C API through bun:ffi: the few calls data-parallel training needs (init, rank/size,
// allreduce, broadcast, barrier, finalize/abort). Node has no NCCL binding and onnxruntime's
// standard builds carry no collective operators, so gradients meet on the host, in MPI.
//
// Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are not integers as in MPICH but
// the addresses of exported globals (mpi.h: OMPI_PREDEFINED_GLOBAL(MPI_Comm, ompi_mpi_comm_world)
// is `(MPI_Comm) &ompi_mpi_comm_world`); dlopen resolves those symbols like functions, and their
// `.ptr` is the address. MPI_IN_PLACE is `(void *) 1`, MPI_STATUS_IGNORE is NULL.

import { dlopen, FFIType, type Pointer, ptr } from "bun:ffi";
import { UserError } from "../io/errors.ts";

const SYMBOLS = {
  MPI_Init: { args: [FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  MPI_Initialized: { args: [FFIType.ptr], returns: FFIType.i32 },
  MPI_Finalize: { args: [], returns: FFIType.i32 },
  MPI_Abort: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  MPI_Comm_rank: { args: [FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  MPI_Comm_size: { args: [FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  MPI_Allreduce: { args: [FFIType.ptr, FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  MPI_Bcast: { args: [FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  MPI_Barrier: { args: [FFIType.ptr], returns: FFIType.i32 },
  MPI_Ibarrier: { args: [FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  MPI_Test: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  MPI_Error_string: { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  // Predefined handles: data symbols, never called; only their addresses are used.
  ompi_mpi_comm_world: { args: [], returns: FFIType.void },
  ompi_mpi_float: { args: [], returns: FFIType.void },
  ompi_mpi_byte: { args: [], returns: FFIType.void },
  ompi_mpi_op_sum: { args: [], returns: FFIType.void },
} as const;

/** Where libmpi is looked for: $PATCHDPO_LIBMPI, then Open MPI's soname (v3 to v5), then the dev link. */
const CANDIDATES = () => [process.env.PATCHDPO_LIBMPI, "libmpi.so.40", "libmpi.so", "libmpi.40.dylib"].filter((x): x is string => !!x);

const IN_PLACE = 1 as Pointer;
/** MPI counts are C ints: larger buffers go in chunks. */
const MAX_COUNT = 1 << 30;

export class Mpi {
  private readonly s: ReturnType<typeof dlopen<typeof SYMBOLS>>["symbols"];
  private readonly comm: Pointer;
  private readonly float: Pointer;
  private readonly byte: Pointer;
  private readonly sum: Pointer;
  readonly rank: number;
  readonly size: number;
  private ended = false;

  /** Loads libmpi and calls MPI_Init. */
  constructor() {
    const errors: string[] = [];
    let lib: ReturnType<typeof dlopen<typeof SYMBOLS>> | undefined;
    for (const name of CANDIDATES()) {
      try {
        lib = dlopen(name, SYMBOLS);
        break;
      } catch (e) {
        errors.push(`${name}: ${(e as Error).message}`);
      }
    }
    if (!lib) {
      throw new UserError(
        `this process was launched as part of a parallel job, but Open MPI's libmpi could not be loaded (${errors.join("; ")}). ` +
          "Install Open MPI (Debian: apt-get install openmpi-bin libopenmpi3) or point PATCHDPO_LIBMPI at libmpi.so.40; other MPIs (MPICH) have another ABI.",
      );
    }
    this.s = lib.symbols;
    const addr = (f: unknown) => (f as { ptr: Pointer }).ptr;
    this.comm = addr(this.s.ompi_mpi_comm_world);
    this.float = addr(this.s.ompi_mpi_float);
    this.byte = addr(this.s.ompi_mpi_byte);
    this.sum = addr(this.s.ompi_mpi_op_sum);
    const flag = new Int32Array(1);
    this.check(this.s.MPI_Initialized(flag), "MPI_Initialized");
    if (!flag[0]) this.check(this.s.MPI_Init(null, null), "MPI_Init");
    const out = new Int32Array(1);
    this.check(this.s.MPI_Comm_rank(this.comm, out), "MPI_Comm_rank");
    this.rank = out[0]!;
    this.check(this.s.MPI_Comm_size(this.comm, out), "MPI_Comm_size");
    this.size = out[0]!;
  }

  private check(rc: number, what: string): void {
    if (rc === 0) return;
    const text = new Uint8Array(512);
    const len = new Int32Array(1);
    const ok = this.s.MPI_Error_string(rc, text, len) === 0;
    throw new Error(`${what} failed (MPI error ${rc}${ok ? `: ${new TextDecoder().decode(text.subarray(0, len[0]))}` : ""})`);
  }

  /** Sums `buf` over all ranks, in place (MPI_Allreduce with MPI_IN_PLACE, MPI_FLOAT, MPI_SUM). */
  allReduceSum(buf: Float32Array): void {
    for (let off = 0; off < buf.length; off += MAX_COUNT) {
      const n = Math.min(MAX_COUNT, buf.length - off);
      this.check(this.s.MPI_Allreduce(IN_PLACE, ptr(buf.subarray(off, off + n)), n, this.float, this.sum, this.comm), "MPI_Allreduce");
    }
  }

  /** Root's bytes into every rank's `buf` (MPI_Bcast over MPI_BYTE). */
  broadcastBytes(buf: Uint8Array, root: number): void {
    for (let off = 0; off < buf.length; off += MAX_COUNT) {
      const n = Math.min(MAX_COUNT, buf.length - off);
      this.check(this.s.MPI_Bcast(ptr(buf.subarray(off, off + n)), n, this.byte, root, this.comm), "MPI_Bcast");
    }
  }

  /** MPI_Barrier: blocks (and Open MPI spins) until every rank arrives. */
  barrier(): void {
    this.check(this.s.MPI_Barrier(this.comm), "MPI_Barrier");
  }

  /**
   * Waits for every rank without spinning the CPU: MPI_Ibarrier, then MPI_Test between short
   * sleeps. A rank that waits long (for rank 0's setup, or a slower peer) then leaves the cores to
   * the ones computing, where a blocking call would busy-poll one core for the whole wait.
   */
  async arrive(): Promise<void> {
    const req = new BigUint64Array(1);
    this.check(this.s.MPI_Ibarrier(this.comm, req), "MPI_Ibarrier");
    const flag = new Int32Array(1);
    for (let i = 0; ; i++) {
      this.check(this.s.MPI_Test(req, flag, null), "MPI_Test");
      if (flag[0]) return;
      await Bun.sleep(i < 100 ? 0 : 1);
    }
  }

  /** MPI_Finalize (a clean exit), or MPI_Abort with the exit code (one failing rank ends the job instead of leaving the others blocked). */
  end(code: number): void {
    if (this.ended) return;
    this.ended = true;
    if (code === 0) this.s.MPI_Finalize();
    else this.s.MPI_Abort(this.comm, code);
  }
}
