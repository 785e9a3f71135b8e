//! A small binding to the PJRT C API (`xla/pjrt/c/pjrt_c_api.h`).
//!
//! The plugin (`libtpu.so` on a TPU VM, XLA's `pjrt_c_api_cpu_plugin.so`
//! elsewhere) is opened with `dlopen`; `GetPjrtApi` returns a table of
//! function pointers whose order and argument structs are fixed by the
//! header. The structs below are written by hand after the header at PJRT C
//! API 0.60 (the entry points used here have not changed their fields since;
//! newer minors only appended fields). Every argument struct carries its own
//! `struct_size`; those the plugin checks against a newer, longer layout are
//! sent with zeroed trailing space (zero is "not set" for every appended
//! field), see [`Args`].
//!
//! Only what the backend needs is bound: plugin initialisation, client
//! create/destroy, platform name, addressable devices, compile (format
//! `"mlir"`, StableHLO text), execute, buffers from and to host memory,
//! events, errors.

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::ptr;
use std::sync::Arc;

/// The major version this binding speaks.
pub const API_MAJOR: i32 = 0;
/// The oldest minor version whose layouts this binding matches.
pub const API_MINOR_MIN: i32 = 60;

/// A failure inside the PJRT plugin or while loading it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {msg}")]
pub struct PjrtError {
    /// The PJRT entry point (or loading step) that failed.
    pub op: &'static str,
    /// The plugin's message.
    pub msg: String,
}

impl PjrtError {
    fn new(op: &'static str, msg: impl Into<String>) -> Self {
        PjrtError {
            op,
            msg: msg.into(),
        }
    }
}

/// Result of a PJRT call.
pub type PjrtResult<T> = std::result::Result<T, PjrtError>;

// ------------------------------------------------------------------ raw ABI

#[repr(C)]
struct RawError {
    _p: [u8; 0],
}
#[repr(C)]
struct RawClient {
    _p: [u8; 0],
}
#[repr(C)]
struct RawDevice {
    _p: [u8; 0],
}
#[repr(C)]
struct RawBuffer {
    _p: [u8; 0],
}
#[repr(C)]
struct RawEvent {
    _p: [u8; 0],
}
#[repr(C)]
struct RawExecutable {
    _p: [u8; 0],
}

#[repr(C)]
struct ApiVersion {
    struct_size: usize,
    ext: *mut c_void,
    major: c_int,
    minor: c_int,
}

/// Index of each used entry point in `PJRT_Api` after the version struct.
mod slot {
    pub const ERROR_DESTROY: usize = 0;
    pub const ERROR_MESSAGE: usize = 1;
    pub const ERROR_GET_CODE: usize = 2;
    pub const PLUGIN_INITIALIZE: usize = 3;
    pub const EVENT_DESTROY: usize = 5;
    pub const EVENT_AWAIT: usize = 8;
    pub const CLIENT_CREATE: usize = 10;
    pub const CLIENT_DESTROY: usize = 11;
    pub const CLIENT_PLATFORM_NAME: usize = 12;
    pub const CLIENT_ADDRESSABLE_DEVICES: usize = 16;
    pub const CLIENT_COMPILE: usize = 20;
    pub const CLIENT_BUFFER_FROM_HOST: usize = 22;
    pub const LOADED_EXECUTABLE_DESTROY: usize = 50;
    pub const LOADED_EXECUTABLE_EXECUTE: usize = 55;
    pub const BUFFER_DESTROY: usize = 58;
    pub const BUFFER_TO_HOST: usize = 70;
    /// One past the highest slot used: the table must be at least this long.
    pub const END: usize = 71;
}

/// Byte offset of the first function pointer in `PJRT_Api`.
const FN_TABLE_OFFSET: usize = 16 + std::mem::size_of::<ApiVersion>();

/// Trailing zeroed space sent after every argument struct, so that a plugin
/// expecting a newer (longer) layout reads "not set" for fields this binding
/// does not know. `struct_size` still reports the known length plus this.
const TAIL: usize = 128;

/// An argument struct followed by zeroed space (see [`TAIL`]).
#[repr(C)]
struct Args<T> {
    inner: T,
    _tail: [u8; TAIL],
}

impl<T> Args<T> {
    fn new(inner: T) -> Self {
        Args {
            inner,
            _tail: [0; TAIL],
        }
    }
}

/// Header of every argument struct: the size and the extension chain.
#[repr(C)]
struct Head {
    struct_size: usize,
    ext: *mut c_void,
}

impl Head {
    /// A header for struct `T` sent with the [`TAIL`] padding.
    fn padded<T>() -> Self {
        Head {
            struct_size: std::mem::size_of::<T>() + TAIL,
            ext: ptr::null_mut(),
        }
    }
}

#[repr(C)]
struct ErrorDestroyArgs {
    head: Head,
    error: *mut RawError,
}
#[repr(C)]
struct ErrorMessageArgs {
    head: Head,
    error: *const RawError,
    message: *const c_char,
    message_size: usize,
}
#[repr(C)]
struct ErrorGetCodeArgs {
    head: Head,
    error: *const RawError,
    code: c_int,
}
#[repr(C)]
struct PluginInitializeArgs {
    head: Head,
}
#[repr(C)]
struct EventArgs {
    head: Head,
    event: *mut RawEvent,
}
#[repr(C)]
struct ClientCreateArgs {
    head: Head,
    create_options: *const c_void,
    num_options: usize,
    kv_get_callback: *const c_void,
    kv_get_user_arg: *mut c_void,
    kv_put_callback: *const c_void,
    kv_put_user_arg: *mut c_void,
    client: *mut RawClient,
}
#[repr(C)]
struct ClientDestroyArgs {
    head: Head,
    client: *mut RawClient,
}
#[repr(C)]
struct ClientPlatformNameArgs {
    head: Head,
    client: *mut RawClient,
    platform_name: *const c_char,
    platform_name_size: usize,
}
#[repr(C)]
struct ClientAddressableDevicesArgs {
    head: Head,
    client: *mut RawClient,
    devices: *const *mut RawDevice,
    num_devices: usize,
}
#[repr(C)]
struct Program {
    head: Head,
    code: *const c_char,
    code_size: usize,
    format: *const c_char,
    format_size: usize,
}
#[repr(C)]
struct ClientCompileArgs {
    head: Head,
    client: *mut RawClient,
    program: *const Program,
    compile_options: *const c_char,
    compile_options_size: usize,
    executable: *mut RawExecutable,
}
#[repr(C)]
struct BufferFromHostArgs {
    head: Head,
    client: *mut RawClient,
    data: *const c_void,
    ty: c_int,
    dims: *const i64,
    num_dims: usize,
    byte_strides: *const i64,
    num_byte_strides: usize,
    host_buffer_semantics: c_int,
    device: *mut RawDevice,
    memory: *mut c_void,
    device_layout: *mut c_void,
    done_with_host_buffer: *mut RawEvent,
    buffer: *mut RawBuffer,
}
#[repr(C)]
struct ExecuteOptions {
    head: Head,
    send_callbacks: *mut c_void,
    recv_callbacks: *mut c_void,
    num_send_ops: usize,
    num_recv_ops: usize,
    launch_id: c_int,
    non_donatable_input_indices: *const i64,
    num_non_donatable_input_indices: usize,
}
#[repr(C)]
struct ExecuteArgs {
    head: Head,
    executable: *mut RawExecutable,
    options: *mut Args<ExecuteOptions>,
    argument_lists: *const *const *mut RawBuffer,
    num_devices: usize,
    num_args: usize,
    output_lists: *const *mut *mut RawBuffer,
    device_complete_events: *mut *mut RawEvent,
    execute_device: *mut RawDevice,
}
#[repr(C)]
struct ExecutableDestroyArgs {
    head: Head,
    executable: *mut RawExecutable,
}
#[repr(C)]
struct BufferDestroyArgs {
    head: Head,
    buffer: *mut RawBuffer,
}
#[repr(C)]
struct BufferToHostArgs {
    head: Head,
    src: *mut RawBuffer,
    host_layout: *mut c_void,
    dst: *mut c_void,
    dst_size: usize,
    event: *mut RawEvent,
}

type Fn1<A> = unsafe extern "C" fn(*mut A) -> *mut RawError;
type VoidFn<A> = unsafe extern "C" fn(*mut A);

/// Element types of `PJRT_Buffer_Type` used by this backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum ElementType {
    /// `PJRT_Buffer_Type_S64`.
    S64 = 5,
    /// `PJRT_Buffer_Type_U8`.
    U8 = 6,
    /// `PJRT_Buffer_Type_F16`.
    F16 = 10,
    /// `PJRT_Buffer_Type_F32`.
    F32 = 11,
    /// `PJRT_Buffer_Type_BF16`.
    BF16 = 13,
    /// `PJRT_Buffer_Type_F8E4M3FN`.
    F8E4M3FN = 17,
}

// ------------------------------------------------------------------ the API

/// A loaded plugin: the library and its function table.
pub struct Api {
    _lib: libloading::Library,
    table: *const u8,
    table_len: usize,
    /// `(major, minor)` the plugin reports.
    pub version: (i32, i32),
}

// SAFETY: the function table is immutable for the life of the process and
// PJRT entry points are thread-safe.
unsafe impl Send for Api {}
// SAFETY: as above.
unsafe impl Sync for Api {}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// Open the plugin at `path`, fetch its table with `GetPjrtApi`, check
    /// the version and call `PJRT_Plugin_Initialize`.
    pub fn load(path: &Path) -> PjrtResult<Arc<Api>> {
        if !path.is_file() {
            return Err(PjrtError::new(
                "dlopen",
                format!("no PJRT plugin at {}", path.display()),
            ));
        }
        // SAFETY: loading a shared library runs its initialisers; the PJRT
        // plugin is a self-contained library made to be dlopened.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| PjrtError::new("dlopen", format!("{}: {e}", path.display())))?;
        // SAFETY: `GetPjrtApi` has this signature in every PJRT plugin.
        let get: libloading::Symbol<'_, unsafe extern "C" fn() -> *const u8> =
            unsafe { lib.get(b"GetPjrtApi\0") }
                .map_err(|e| PjrtError::new("GetPjrtApi", e.to_string()))?;
        // SAFETY: calling the plugin's exported accessor.
        let table = unsafe { get() };
        if table.is_null() {
            return Err(PjrtError::new("GetPjrtApi", "returned a null table"));
        }
        // SAFETY: the table starts with `struct_size`, `extension_start`
        // and the `PJRT_Api_Version` struct.
        let (table_len, version) = unsafe {
            let size = ptr::read_unaligned(table as *const usize);
            let v = ptr::read_unaligned(table.add(16) as *const ApiVersion);
            (size, (v.major, v.minor))
        };
        if version.0 != API_MAJOR {
            return Err(PjrtError::new(
                "GetPjrtApi",
                format!(
                    "plugin speaks PJRT C API {}.{}, this backend speaks major version {API_MAJOR}",
                    version.0, version.1
                ),
            ));
        }
        if version.1 < API_MINOR_MIN {
            return Err(PjrtError::new(
                "GetPjrtApi",
                format!(
                    "plugin speaks PJRT C API {}.{}, too old: this backend needs 0.{API_MINOR_MIN} or newer",
                    version.0, version.1
                ),
            ));
        }
        if table_len < FN_TABLE_OFFSET + slot::END * 8 {
            return Err(PjrtError::new(
                "GetPjrtApi",
                format!("function table of {table_len} bytes is too short"),
            ));
        }
        let api = Api {
            _lib: lib,
            table,
            table_len,
            version,
        };
        let mut args = Args::new(PluginInitializeArgs {
            head: Head::padded::<PluginInitializeArgs>(),
        });
        api.call("PJRT_Plugin_Initialize", slot::PLUGIN_INITIALIZE, &mut args)?;
        Ok(Arc::new(api))
    }

    /// The function pointer in `slot`.
    fn fn_ptr(&self, op: &'static str, slot: usize) -> PjrtResult<*const c_void> {
        let off = FN_TABLE_OFFSET + slot * 8;
        if off + 8 > self.table_len {
            return Err(PjrtError::new(op, "not in this plugin's function table"));
        }
        // SAFETY: `off` lies inside the table (checked above).
        let f = unsafe { ptr::read_unaligned(self.table.add(off) as *const *const c_void) };
        if f.is_null() {
            return Err(PjrtError::new(op, "not implemented by this plugin"));
        }
        Ok(f)
    }

    /// Call an entry point returning `PJRT_Error*`, turning an error into
    /// [`PjrtError`] (message read, error destroyed).
    fn call<A>(&self, op: &'static str, slot: usize, args: &mut A) -> PjrtResult<()> {
        let f = self.fn_ptr(op, slot)?;
        // SAFETY: `f` is the plugin's entry point for `slot`, whose argument
        // struct is `A` (each call site pairs them as the header does).
        let err = unsafe {
            let f: Fn1<A> = std::mem::transmute::<*const c_void, Fn1<A>>(f);
            f(args)
        };
        self.check(op, err)
    }

    /// Turn a returned `PJRT_Error*` into a result, destroying it.
    fn check(&self, op: &'static str, err: *mut RawError) -> PjrtResult<()> {
        if err.is_null() {
            return Ok(());
        }
        let mut msg = Args::new(ErrorMessageArgs {
            head: Head::padded::<ErrorMessageArgs>(),
            error: err,
            message: ptr::null(),
            message_size: 0,
        });
        let mut text = String::from("unknown PJRT error");
        if let Ok(f) = self.fn_ptr("PJRT_Error_Message", slot::ERROR_MESSAGE) {
            // SAFETY: entry point and struct match the header.
            unsafe {
                let f: VoidFn<Args<ErrorMessageArgs>> =
                    std::mem::transmute::<*const c_void, VoidFn<Args<ErrorMessageArgs>>>(f);
                f(&mut msg);
                if !msg.inner.message.is_null() {
                    let bytes = std::slice::from_raw_parts(
                        msg.inner.message as *const u8,
                        msg.inner.message_size,
                    );
                    text = String::from_utf8_lossy(bytes).into_owned();
                }
            }
        }
        let mut code = Args::new(ErrorGetCodeArgs {
            head: Head::padded::<ErrorGetCodeArgs>(),
            error: err,
            code: 0,
        });
        if let Ok(f) = self.fn_ptr("PJRT_Error_GetCode", slot::ERROR_GET_CODE) {
            // SAFETY: entry point and struct match the header.
            let e2 = unsafe {
                let f: Fn1<Args<ErrorGetCodeArgs>> =
                    std::mem::transmute::<*const c_void, Fn1<Args<ErrorGetCodeArgs>>>(f);
                f(&mut code)
            };
            if e2.is_null() && code.inner.code != 0 {
                text = format!("{text} (code {})", code_name(code.inner.code));
            } else if !e2.is_null() {
                self.destroy_error(e2);
            }
        }
        self.destroy_error(err);
        Err(PjrtError::new(op, text))
    }

    fn destroy_error(&self, err: *mut RawError) {
        if let Ok(f) = self.fn_ptr("PJRT_Error_Destroy", slot::ERROR_DESTROY) {
            let mut d = Args::new(ErrorDestroyArgs {
                head: Head::padded::<ErrorDestroyArgs>(),
                error: err,
            });
            // SAFETY: entry point and struct match the header.
            unsafe {
                let f: VoidFn<Args<ErrorDestroyArgs>> =
                    std::mem::transmute::<*const c_void, VoidFn<Args<ErrorDestroyArgs>>>(f);
                f(&mut d);
            }
        }
    }

    /// Wait for `event`, then destroy it.
    fn await_event(&self, op: &'static str, event: *mut RawEvent) -> PjrtResult<()> {
        if event.is_null() {
            return Ok(());
        }
        let mut a = Args::new(EventArgs {
            head: Head::padded::<EventArgs>(),
            event,
        });
        let r = self.call(op, slot::EVENT_AWAIT, &mut a);
        let mut d = Args::new(EventArgs {
            head: Head::padded::<EventArgs>(),
            event,
        });
        let r2 = self.call("PJRT_Event_Destroy", slot::EVENT_DESTROY, &mut d);
        r.and(r2)
    }
}

fn code_name(code: c_int) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "?",
    }
}

// ----------------------------------------------------------------- client

/// A PJRT client and its addressable devices.
pub struct Client {
    api: Arc<Api>,
    raw: *mut RawClient,
    devices: Vec<*mut RawDevice>,
    /// `PJRT_Client_PlatformName` (`"cpu"`, `"tpu"`, …).
    pub platform: String,
}

// SAFETY: PJRT clients are thread-safe.
unsafe impl Send for Client {}
// SAFETY: as above.
unsafe impl Sync for Client {}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("platform", &self.platform)
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `PJRT_Client_Create` with no options, then the platform name and the
    /// addressable devices.
    pub fn create(api: Arc<Api>) -> PjrtResult<Client> {
        let mut a = Args::new(ClientCreateArgs {
            head: Head::padded::<ClientCreateArgs>(),
            create_options: ptr::null(),
            num_options: 0,
            kv_get_callback: ptr::null(),
            kv_get_user_arg: ptr::null_mut(),
            kv_put_callback: ptr::null(),
            kv_put_user_arg: ptr::null_mut(),
            client: ptr::null_mut(),
        });
        api.call("PJRT_Client_Create", slot::CLIENT_CREATE, &mut a)?;
        let mut client = Client {
            api,
            raw: a.inner.client,
            devices: Vec::new(),
            platform: String::new(),
        };
        let mut p = Args::new(ClientPlatformNameArgs {
            head: Head::padded::<ClientPlatformNameArgs>(),
            client: client.raw,
            platform_name: ptr::null(),
            platform_name_size: 0,
        });
        client.api.call(
            "PJRT_Client_PlatformName",
            slot::CLIENT_PLATFORM_NAME,
            &mut p,
        )?;
        if !p.inner.platform_name.is_null() {
            // SAFETY: the plugin returned a string of this length owned by the client.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    p.inner.platform_name as *const u8,
                    p.inner.platform_name_size,
                )
            };
            client.platform = String::from_utf8_lossy(bytes).into_owned();
        }
        let mut d = Args::new(ClientAddressableDevicesArgs {
            head: Head::padded::<ClientAddressableDevicesArgs>(),
            client: client.raw,
            devices: ptr::null(),
            num_devices: 0,
        });
        client.api.call(
            "PJRT_Client_AddressableDevices",
            slot::CLIENT_ADDRESSABLE_DEVICES,
            &mut d,
        )?;
        if !d.inner.devices.is_null() {
            // SAFETY: an array of `num_devices` device pointers owned by the client.
            client.devices = unsafe {
                std::slice::from_raw_parts(d.inner.devices, d.inner.num_devices).to_vec()
            };
        }
        Ok(client)
    }

    /// The PJRT API this client was made by.
    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// Number of addressable devices.
    pub fn num_devices(&self) -> usize {
        self.devices.len()
    }

    fn device(&self, op: &'static str, index: usize) -> PjrtResult<*mut RawDevice> {
        self.devices.get(index).copied().ok_or_else(|| {
            PjrtError::new(
                op,
                format!(
                    "device {index} is not addressable ({} devices)",
                    self.devices.len()
                ),
            )
        })
    }

    /// Compile StableHLO text (`PJRT_Client_Compile`, format `"mlir"`).
    pub fn compile(&self, mlir: &str) -> PjrtResult<Executable> {
        let format = "mlir";
        let program = Args::new(Program {
            head: Head::padded::<Program>(),
            code: mlir.as_ptr() as *const c_char,
            code_size: mlir.len(),
            format: format.as_ptr() as *const c_char,
            format_size: format.len(),
        });
        let options = compile_options();
        let mut a = Args::new(ClientCompileArgs {
            head: Head::padded::<ClientCompileArgs>(),
            client: self.raw,
            program: &program.inner,
            compile_options: options.as_ptr() as *const c_char,
            compile_options_size: options.len(),
            executable: ptr::null_mut(),
        });
        self.api
            .call("PJRT_Client_Compile", slot::CLIENT_COMPILE, &mut a)?;
        Ok(Executable {
            api: self.api.clone(),
            raw: a.inner.executable,
        })
    }

    /// Copy host bytes into a new device buffer of `ty` and shape `dims` on
    /// device `device`. The host data may be freed when this returns.
    pub fn buffer_from_host(
        &self,
        device: usize,
        data: &[u8],
        ty: ElementType,
        dims: &[i64],
    ) -> PjrtResult<Buffer> {
        let op = "PJRT_Client_BufferFromHostBuffer";
        let dev = self.device(op, device)?;
        let mut a = Args::new(BufferFromHostArgs {
            head: Head::padded::<BufferFromHostArgs>(),
            client: self.raw,
            data: data.as_ptr() as *const c_void,
            ty: ty as c_int,
            dims: dims.as_ptr(),
            num_dims: dims.len(),
            byte_strides: ptr::null(),
            num_byte_strides: 0,
            // kImmutableUntilTransferCompletes: we wait for the transfer below.
            host_buffer_semantics: 1,
            device: dev,
            memory: ptr::null_mut(),
            device_layout: ptr::null_mut(),
            done_with_host_buffer: ptr::null_mut(),
            buffer: ptr::null_mut(),
        });
        self.api.call(op, slot::CLIENT_BUFFER_FROM_HOST, &mut a)?;
        let buffer = Buffer {
            api: self.api.clone(),
            raw: a.inner.buffer,
        };
        self.api.await_event(op, a.inner.done_with_host_buffer)?;
        Ok(buffer)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let mut a = Args::new(ClientDestroyArgs {
            head: Head::padded::<ClientDestroyArgs>(),
            client: self.raw,
        });
        // A failure to destroy cannot be reported from `drop`.
        let _ = self
            .api
            .call("PJRT_Client_Destroy", slot::CLIENT_DESTROY, &mut a);
    }
}

/// A serialized `xla.CompileOptionsProto`: `executable_build_options`
/// (field 3) holding `num_replicas = 1` (field 4) and `num_partitions = 1`
/// (field 5); everything else default.
fn compile_options() -> Vec<u8> {
    vec![0x1a, 0x04, 0x20, 0x01, 0x28, 0x01]
}

// ------------------------------------------------------------- executables

/// A compiled, loaded program.
pub struct Executable {
    api: Arc<Api>,
    raw: *mut RawExecutable,
}

// SAFETY: PJRT executables may be executed from any thread.
unsafe impl Send for Executable {}
// SAFETY: as above.
unsafe impl Sync for Executable {}

impl std::fmt::Debug for Executable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executable").finish_non_exhaustive()
    }
}

impl Executable {
    /// Run on the compiled-for device with `args`; returns `num_outputs` new
    /// buffers once the run has completed. An argument the program aliases
    /// to an output (`tf.aliasing_output`) is donated: the run may consume
    /// it, and the caller must only destroy it afterwards.
    pub fn execute(&self, args: &[&Buffer], num_outputs: usize) -> PjrtResult<Vec<Buffer>> {
        let op = "PJRT_LoadedExecutable_Execute";
        let arg_ptrs: Vec<*mut RawBuffer> = args.iter().map(|b| b.raw).collect();
        let arg_list: *const *mut RawBuffer = arg_ptrs.as_ptr();
        let mut outs: Vec<*mut RawBuffer> = vec![ptr::null_mut(); num_outputs.max(1)];
        let out_list: *mut *mut RawBuffer = outs.as_mut_ptr();
        let mut event: *mut RawEvent = ptr::null_mut();
        let mut options = Args::new(ExecuteOptions {
            head: Head::padded::<ExecuteOptions>(),
            send_callbacks: ptr::null_mut(),
            recv_callbacks: ptr::null_mut(),
            num_send_ops: 0,
            num_recv_ops: 0,
            launch_id: 0,
            non_donatable_input_indices: ptr::null(),
            num_non_donatable_input_indices: 0,
        });
        let mut a = Args::new(ExecuteArgs {
            head: Head::padded::<ExecuteArgs>(),
            executable: self.raw,
            options: &mut options,
            argument_lists: &arg_list,
            num_devices: 1,
            num_args: arg_ptrs.len(),
            output_lists: &out_list,
            device_complete_events: &mut event,
            execute_device: ptr::null_mut(),
        });
        self.api.call(op, slot::LOADED_EXECUTABLE_EXECUTE, &mut a)?;
        let buffers: Vec<Buffer> = outs
            .into_iter()
            .take(num_outputs)
            .map(|raw| Buffer {
                api: self.api.clone(),
                raw,
            })
            .collect();
        self.api.await_event(op, event)?;
        if buffers.iter().any(|b| b.raw.is_null()) {
            return Err(PjrtError::new(op, "the program returned fewer outputs"));
        }
        Ok(buffers)
    }
}

impl Drop for Executable {
    fn drop(&mut self) {
        let mut a = Args::new(ExecutableDestroyArgs {
            head: Head::padded::<ExecutableDestroyArgs>(),
            executable: self.raw,
        });
        let _ = self.api.call(
            "PJRT_LoadedExecutable_Destroy",
            slot::LOADED_EXECUTABLE_DESTROY,
            &mut a,
        );
    }
}

// ----------------------------------------------------------------- buffers

/// A device buffer owned by this process.
pub struct Buffer {
    api: Arc<Api>,
    raw: *mut RawBuffer,
}

// SAFETY: PJRT buffers may be used from any thread.
unsafe impl Send for Buffer {}
// SAFETY: as above.
unsafe impl Sync for Buffer {}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer").finish_non_exhaustive()
    }
}

impl Buffer {
    /// Copy the whole buffer to `dst` (`dst.len()` must be its size in bytes)
    /// and wait for the copy.
    pub fn to_host(&self, dst: &mut [u8]) -> PjrtResult<()> {
        let op = "PJRT_Buffer_ToHostBuffer";
        let mut a = Args::new(BufferToHostArgs {
            head: Head::padded::<BufferToHostArgs>(),
            src: self.raw,
            host_layout: ptr::null_mut(),
            dst: dst.as_mut_ptr() as *mut c_void,
            dst_size: dst.len(),
            event: ptr::null_mut(),
        });
        self.api.call(op, slot::BUFFER_TO_HOST, &mut a)?;
        self.api.await_event(op, a.inner.event)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut a = Args::new(BufferDestroyArgs {
            head: Head::padded::<BufferDestroyArgs>(),
            buffer: self.raw,
        });
        let _ = self
            .api
            .call("PJRT_Buffer_Destroy", slot::BUFFER_DESTROY, &mut a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_header() {
        // Sizes from PJRT_DEFINE_STRUCT_TRAITS on x86-64 / aarch64.
        assert_eq!(std::mem::size_of::<ApiVersion>(), 24);
        assert_eq!(std::mem::size_of::<ClientCreateArgs>(), 72);
        assert_eq!(std::mem::size_of::<Program>(), 48);
        assert_eq!(std::mem::size_of::<ClientCompileArgs>(), 56);
        assert_eq!(std::mem::size_of::<BufferFromHostArgs>(), 120);
        assert_eq!(std::mem::size_of::<ExecuteOptions>(), 72);
        assert_eq!(std::mem::size_of::<ExecuteArgs>(), 80);
        assert_eq!(std::mem::size_of::<BufferToHostArgs>(), 56);
    }

    #[test]
    fn missing_plugin_is_an_error() {
        let e = Api::load(Path::new("no-such-directory/pjrt_plugin.so")).unwrap_err();
        assert_eq!(e.op, "dlopen");
    }
}
