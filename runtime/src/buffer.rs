//! Device buffers and host copies of them.

use std::ptr;
use std::sync::Arc;

use crate::client::{Client, ClientInner, Device};
use crate::element_type::{as_bytes, ElementType, NativeType};
use crate::error::{Error, Result};
use crate::plugin::{new_args, optional_fn, vec_from_raw};
use crate::sys;

/// An array on one device.
///
/// Holds an `Arc` of its client so the client cannot be destroyed first. Element type, dims and
/// device never change for a PJRT buffer, so they are read once at creation.
///
/// `Buffer` is `Send + Sync`: an `xla::PjRtBuffer` may be read (copied to host, used as an
/// execution input) from several threads at once; the CPU client guards its usage counts and
/// definition events with an internal mutex. The only mutating operation, donation, needs an owned
/// `Buffer` ([`crate::Arg::Donate`]), which Rust already makes exclusive.
pub struct Buffer {
    pub(crate) client: Arc<ClientInner>,
    pub(crate) raw: *mut sys::PJRT_Buffer,
    ty: ElementType,
    dims: Vec<i64>,
    device: usize,
    /// Host memory the plugin may be using as the buffer's storage (zero-copy), with the event
    /// that says when it no longer does; freed after the buffer.
    host: Option<(HostBytes, *mut sys::PJRT_Event)>,
}

/// Host memory aligned for zero-copy device buffers (64 bytes, XLA:CPU's minimum alignment),
/// filled by the caller, then handed to [`Client::buffer_from_host_bytes`].
pub struct HostBytes {
    ptr: ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: `HostBytes` owns its allocation exclusively, like a `Vec<u8>`.
unsafe impl Send for HostBytes {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for HostBytes {}

const HOST_ALIGN: usize = 64;

impl HostBytes {
    /// `len` zeroed bytes.
    pub fn zeroed(len: usize) -> HostBytes {
        if len == 0 {
            return HostBytes {
                ptr: ptr::NonNull::dangling(),
                len: 0,
            };
        }
        let layout = std::alloc::Layout::from_size_align(len, HOST_ALIGN).expect("valid layout");
        // SAFETY: non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        HostBytes { ptr, len }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the first byte.
    pub fn address(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
}

impl Drop for HostBytes {
    fn drop(&mut self) {
        if self.len > 0 {
            let layout =
                std::alloc::Layout::from_size_align(self.len, HOST_ALIGN).expect("valid layout");
            // SAFETY: allocated in `zeroed` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

// SAFETY: see the type-level docs (PJRT buffers are thread-safe; `Buffer` has no `&self` mutation).
unsafe impl Send for Buffer {}
// SAFETY: as for `Send`.
unsafe impl Sync for Buffer {}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Buffer({}{:?} on device #{})",
            self.ty, self.dims, self.device
        )
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let api = self.client.api();
        let mut args: sys::PJRT_Buffer_Destroy_Args = new_args();
        args.buffer = self.raw;
        // SAFETY: we own `raw` and destroy it once. Destroying a donated (already deleted) buffer
        // is allowed: it frees only the handle. Errors cannot be reported from `drop`.
        let _ = unsafe { api.check((api.fns.PJRT_Buffer_Destroy)(&mut args)) };
        if let Some((bytes, event)) = self.host.take() {
            // The plugin signals when it is done with the memory; only then may it be freed.
            // SAFETY: the event is ours and awaited once.
            let _ = unsafe { api.await_and_destroy_event(event) };
            drop(bytes);
        }
    }
}

impl Buffer {
    /// Takes ownership of a buffer the plugin returned, reading its fixed metadata. On failure the
    /// buffer is destroyed.
    ///
    /// # Safety
    /// `raw` must be a live buffer of `client`, owned by the caller.
    pub(crate) unsafe fn from_raw(
        client: &Arc<ClientInner>,
        raw: *mut sys::PJRT_Buffer,
    ) -> Result<Buffer> {
        // The guard frees `raw` if any query below fails.
        let mut buffer = Buffer {
            client: Arc::clone(client),
            raw,
            ty: ElementType::Pred,
            dims: Vec::new(),
            device: 0,
            host: None,
        };
        let api = client.api();

        let mut ty_args: sys::PJRT_Buffer_ElementType_Args = new_args();
        ty_args.buffer = raw;
        // SAFETY: live buffer.
        unsafe { api.check((api.fns.PJRT_Buffer_ElementType)(&mut ty_args))? };
        buffer.ty = ElementType::from_pjrt(ty_args.type_)
            .ok_or(Error::UnsupportedElementType(ty_args.type_.0))?;

        let mut dim_args: sys::PJRT_Buffer_Dimensions_Args = new_args();
        dim_args.buffer = raw;
        // SAFETY: live buffer; the dims are borrowed from it and copied immediately.
        unsafe { api.check((api.fns.PJRT_Buffer_Dimensions)(&mut dim_args))? };
        // SAFETY: the plugin returned `num_dims` values.
        buffer.dims = unsafe { vec_from_raw(dim_args.dims, dim_args.num_dims) };

        let mut dev_args: sys::PJRT_Buffer_Device_Args = new_args();
        dev_args.buffer = raw;
        // SAFETY: live buffer.
        unsafe { api.check((api.fns.PJRT_Buffer_Device)(&mut dev_args))? };
        buffer.device = client.device_by_raw(dev_args.device)?.index();
        Ok(buffer)
    }

    /// Element type.
    pub fn element_type(&self) -> ElementType {
        self.ty
    }

    /// Dimensions, major to minor.
    pub fn dims(&self) -> &[i64] {
        &self.dims
    }

    /// Number of elements (1 for a scalar).
    pub fn element_count(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }

    /// The device holding this buffer.
    pub fn device(&self) -> &Device {
        &self.client.devices[self.device]
    }

    /// The raw handle, for calling PJRT entry points this crate does not wrap. It stays owned
    /// by `self`.
    pub fn as_raw(&self) -> *mut sys::PJRT_Buffer {
        self.raw
    }

    /// Whether the buffer's storage may be host memory handed over with
    /// [`Client::buffer_from_host_bytes`] (such a buffer cannot be donated).
    pub fn is_host_backed(&self) -> bool {
        self.host.is_some()
    }

    /// The buffer's address in device memory (`PJRT_Buffer_UnsafePointer`; host memory on the
    /// CPU plugin): for checking that a donated buffer came back in place, or that a host
    /// allocation is used without a copy.
    pub fn device_pointer(&self) -> Result<usize> {
        let api = self.client.api();
        let f = optional_fn!(api, PJRT_Buffer_UnsafePointer)?;
        let mut args: sys::PJRT_Buffer_UnsafePointer_Args = new_args();
        args.buffer = self.raw;
        // SAFETY: live buffer.
        unsafe { api.check(f(&mut args))? };
        Ok(args.buffer_pointer)
    }

    /// Copies the buffer to host memory (dense, row-major), waiting for any pending computation
    /// that produces it.
    pub fn to_host(&self) -> Result<HostBuffer> {
        let api = self.client.api();
        let expected = self.element_count() * self.ty.byte_size();

        let mut args: sys::PJRT_Buffer_ToHostBuffer_Args = new_args();
        args.src = self.raw;
        // A NULL `dst` asks only for the size; that tells us whether the device layout is the
        // dense row-major one we hand out.
        // SAFETY: live buffer; NULL host_layout means the buffer's own layout.
        unsafe { api.check((api.fns.PJRT_Buffer_ToHostBuffer)(&mut args))? };
        // SAFETY: a size query may still hand back an event we own.
        unsafe { api.await_and_destroy_event(args.event)? };
        if args.dst_size != expected {
            return Err(Error::InvalidArgument(format!(
                "buffer {}{:?} needs {} host bytes but PJRT reports {} (non-dense layout?)",
                self.ty, self.dims, expected, args.dst_size
            )));
        }

        let mut bytes = vec![0u8; expected];
        let mut args: sys::PJRT_Buffer_ToHostBuffer_Args = new_args();
        args.src = self.raw;
        args.dst = bytes.as_mut_ptr().cast();
        args.dst_size = bytes.len();
        // SAFETY: `bytes` has `dst_size` writable bytes and is not touched until the event is done.
        unsafe { api.check((api.fns.PJRT_Buffer_ToHostBuffer)(&mut args))? };
        // SAFETY: the event is ours; awaiting it is what makes `bytes` valid to read.
        unsafe { api.await_and_destroy_event(args.event)? };
        Ok(HostBuffer {
            ty: self.ty,
            dims: self.dims.clone(),
            bytes,
        })
    }

    /// Shorthand for `self.to_host()?.to_vec::<T>()`.
    pub fn to_vec<T: NativeType>(&self) -> Result<Vec<T>> {
        self.to_host()?.to_vec()
    }
}

/// A dense, row-major host copy of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostBuffer {
    pub ty: ElementType,
    pub dims: Vec<i64>,
    /// `product(dims) * ty.byte_size()` bytes in host byte order.
    pub bytes: Vec<u8>,
}

impl HostBuffer {
    /// The elements as `T`, which must match the element type exactly (no conversions).
    pub fn to_vec<T: NativeType>(&self) -> Result<Vec<T>> {
        if T::ELEMENT_TYPE != self.ty {
            return Err(Error::InvalidArgument(format!(
                "cannot read a {} buffer as {}",
                self.ty,
                T::ELEMENT_TYPE
            )));
        }
        Ok(self
            .bytes
            .chunks_exact(self.ty.byte_size())
            .map(T::read_ne)
            .collect())
    }
}

/// Checks dims and returns the element count, so a wrong `bytes.len()` never reaches the plugin
/// (which would read past the end of the slice).
fn checked_element_count(dims: &[i64]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d)
            .map_err(|_| Error::InvalidArgument(format!("negative dimension in {dims:?}")))?;
        acc.checked_mul(d)
            .ok_or_else(|| Error::InvalidArgument(format!("element count of {dims:?} overflows")))
    })
}

impl Client {
    /// Copies `bytes` (dense, row-major, host byte order) to a new buffer on addressable device
    /// `device` (an index into [`Client::addressable_devices`]).
    ///
    /// Uses `kImmutableOnlyDuringCall`, so the plugin copies `bytes` before returning and the
    /// slice is free afterwards; any `done_with_host_buffer` event is still awaited and destroyed.
    pub fn buffer_from_host(
        &self,
        bytes: &[u8],
        ty: ElementType,
        dims: &[i64],
        device: usize,
    ) -> Result<Buffer> {
        let inner = &self.inner;
        let api = inner.api();
        let dev = inner.devices.get(device).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "device index {device} out of range: the client has {} addressable devices",
                inner.devices.len()
            ))
        })?;
        let expected = checked_element_count(dims)?
            .checked_mul(ty.byte_size())
            .ok_or_else(|| Error::InvalidArgument(format!("byte size of {dims:?} overflows")))?;
        if bytes.len() != expected {
            return Err(Error::InvalidArgument(format!(
                "{ty}{dims:?} needs {expected} bytes, got {}",
                bytes.len()
            )));
        }
        let mut args: sys::PJRT_Client_BufferFromHostBuffer_Args = new_args();
        args.client = inner.raw;
        args.data = bytes.as_ptr().cast();
        args.type_ = ty.to_pjrt();
        args.dims = dims.as_ptr();
        args.num_dims = dims.len();
        args.byte_strides = ptr::null();
        args.host_buffer_semantics =
            sys::PJRT_HostBufferSemantics::PJRT_HostBufferSemantics_kImmutableOnlyDuringCall;
        args.device = dev.raw;
        // SAFETY: `bytes` and `dims` are valid for the call; with kImmutableOnlyDuringCall the
        // plugin does not keep `data` afterwards.
        unsafe { api.check((api.fns.PJRT_Client_BufferFromHostBuffer)(&mut args))? };
        // Own the buffer before awaiting so it is freed if the transfer reports an error.
        let buffer = Buffer {
            client: Arc::clone(inner),
            raw: args.buffer,
            ty,
            dims: dims.to_vec(),
            device,
            host: None,
        };
        // SAFETY: the event (if any) is ours.
        unsafe { api.await_and_destroy_event(args.done_with_host_buffer)? };
        Ok(buffer)
    }

    /// A buffer holding `bytes` (dense, row-major), with the memory handed over: a plugin that
    /// can (XLA:CPU, for aligned dense arrays) uses it as the buffer's storage with no copy
    /// (`kImmutableZeroCopy`); otherwise it copies and the memory is freed with the buffer.
    /// Either way the host holds one copy of the data, not two.
    pub fn buffer_from_host_bytes(
        &self,
        bytes: HostBytes,
        ty: ElementType,
        dims: &[i64],
        device: usize,
    ) -> Result<Buffer> {
        let inner = &self.inner;
        let api = inner.api();
        let dev = inner.devices.get(device).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "device index {device} out of range: the client has {} addressable devices",
                inner.devices.len()
            ))
        })?;
        let expected = checked_element_count(dims)?
            .checked_mul(ty.byte_size())
            .ok_or_else(|| Error::InvalidArgument(format!("byte size of {dims:?} overflows")))?;
        if bytes.len() != expected {
            return Err(Error::InvalidArgument(format!(
                "{ty}{dims:?} needs {expected} bytes, got {}",
                bytes.len()
            )));
        }
        let mut args: sys::PJRT_Client_BufferFromHostBuffer_Args = new_args();
        args.client = inner.raw;
        args.data = bytes.as_slice().as_ptr().cast();
        args.type_ = ty.to_pjrt();
        args.dims = dims.as_ptr();
        args.num_dims = dims.len();
        args.byte_strides = ptr::null();
        args.host_buffer_semantics =
            sys::PJRT_HostBufferSemantics::PJRT_HostBufferSemantics_kImmutableZeroCopy;
        args.device = dev.raw;
        // SAFETY: `bytes` stays alive (owned by the returned buffer) until the plugin's
        // done-with-host-buffer event fires, which `Buffer::drop` awaits before freeing it.
        unsafe { api.check((api.fns.PJRT_Client_BufferFromHostBuffer)(&mut args))? };
        let event = args.done_with_host_buffer;
        // A plugin that copied is done with the memory already: free it now rather than hold a
        // second copy for the buffer's lifetime.
        // SAFETY: the event (if any) is ours and live.
        let copied = event.is_null() || unsafe { api.event_is_ready(event) };
        let host = if copied {
            // SAFETY: the event is ours; consumed once.
            unsafe { api.await_and_destroy_event(event)? };
            drop(bytes);
            None
        } else {
            Some((bytes, event))
        };
        Ok(Buffer {
            client: Arc::clone(inner),
            raw: args.buffer,
            ty,
            dims: dims.to_vec(),
            device,
            host,
        })
    }

    /// Typed form of [`Client::buffer_from_host`]; `data.len()` must equal the element count.
    pub fn buffer_from_slice<T: NativeType>(
        &self,
        data: &[T],
        dims: &[i64],
        device: usize,
    ) -> Result<Buffer> {
        self.buffer_from_host(as_bytes(data), T::ELEMENT_TYPE, dims, device)
    }

    /// A rank-0 buffer holding `value`.
    pub fn buffer_from_scalar<T: NativeType>(&self, value: T, device: usize) -> Result<Buffer> {
        self.buffer_from_slice(&[value], &[], device)
    }
}
