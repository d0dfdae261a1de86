//! `PJRT_Client`: devices, compilation and host-to-device transfers.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::plugin::{new_args, string_from_raw, vec_from_raw, Plugin, PluginInner};
use crate::sys;

/// Options for [`Client::new`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// CPU plugin only: how many CPU "devices" to create (the plugin's default is 4). Collective
    /// tests use this to stand in for N NeuronCores.
    pub cpu_device_count: Option<i64>,
}

/// One addressable device of a [`Client`].
///
/// `index` is the position in [`Client::addressable_devices`], which is what
/// [`Client::buffer_from_host`] takes; `id` is PJRT's global device id. On the CPU plugin the
/// two coincide, but nothing in PJRT promises that, so they are kept apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub(crate) raw: *mut sys::PJRT_Device,
    index: usize,
    id: i32,
}

// SAFETY: `raw` is an opaque identity token: Rust never dereferences it, and the crate passes it
// to PJRT only together with a live client that owns the device.
unsafe impl Send for Device {}
// SAFETY: as above; `Device` has no interior mutability.
unsafe impl Sync for Device {}

impl Device {
    /// Position in the client's addressable-device list.
    pub fn index(&self) -> usize {
        self.index
    }

    /// PJRT's device id (`PJRT_DeviceDescription_Id`).
    pub fn id(&self) -> i32 {
        self.id
    }
}

/// State shared by a client and every buffer and executable made from it, so that the
/// `PJRT_Client` is destroyed only after all of them (PJRT requires the client to outlive them).
pub(crate) struct ClientInner {
    pub(crate) plugin: Plugin,
    pub(crate) raw: *mut sys::PJRT_Client,
    pub(crate) devices: Vec<Device>,
    platform_name: String,
}

impl ClientInner {
    pub(crate) fn api(&self) -> &'static PluginInner {
        self.plugin.inner
    }

    /// Finds the client-level [`Device`] for a device pointer the plugin handed back.
    pub(crate) fn device_by_raw(&self, raw: *mut sys::PJRT_Device) -> Result<&Device> {
        self.devices.iter().find(|d| d.raw == raw).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "device {raw:p} returned by the plugin is not one of the client's addressable devices"
            ))
        })
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        let mut args: sys::PJRT_Client_Destroy_Args = new_args();
        args.client = self.raw;
        // SAFETY: the last `Arc<ClientInner>` is going away, so no buffer or executable of this
        // client is left. A failure here cannot be reported from `drop`; the error is destroyed.
        let _ = unsafe {
            self.api()
                .check((self.api().fns.PJRT_Client_Destroy)(&mut args))
        };
    }
}

// SAFETY: a `PJRT_Client` wraps an `xla::PjRtClient`, whose methods JAX and other frameworks call
// concurrently from many threads; the CPU client synchronizes internally. The raw device pointers
// are immutable handles owned by the client. `ClientInner` itself is never mutated after creation.
unsafe impl Send for ClientInner {}
// SAFETY: see `Send`; all `&self` methods only call thread-safe PJRT entry points.
unsafe impl Sync for ClientInner {}

/// A PJRT client: the owner of devices, executables and buffers.
///
/// Cloning is cheap and yields another handle to the same client. `Client` is `Send + Sync`
/// (see the SAFETY note on `ClientInner`): PJRT clients are designed for concurrent use.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("platform", &self.inner.platform_name)
            .field("devices", &self.inner.devices.len())
            .finish()
    }
}

impl Client {
    /// Creates a client, passing `options` as PJRT create options.
    pub fn new(plugin: &Plugin, options: &ClientOptions) -> Result<Client> {
        let api = plugin.inner;
        let mut named = Vec::new();
        let cpu_device_count_name = c"cpu_device_count";
        if let Some(n) = options.cpu_device_count {
            if n < 1 {
                return Err(Error::InvalidArgument(format!(
                    "cpu_device_count must be at least 1, got {n}"
                )));
            }
            let mut v: sys::PJRT_NamedValue = new_args();
            v.name = cpu_device_count_name.as_ptr();
            v.name_size = cpu_device_count_name.count_bytes();
            v.type_ = sys::PJRT_NamedValue_Type::PJRT_NamedValue_kInt64;
            v.__bindgen_anon_1.int64_value = n;
            v.value_size = 1;
            named.push(v);
        }
        let mut args: sys::PJRT_Client_Create_Args = new_args();
        args.create_options = named.as_ptr();
        args.num_options = named.len();
        // SAFETY: `named` outlives the call and its names are static; kv callbacks NULL is allowed for a
        // single-process client.
        unsafe { api.check((api.fns.PJRT_Client_Create)(&mut args))? };
        let raw = args.client;
        // Built before querying devices so the client is destroyed if a query fails.
        let mut inner = ClientInner {
            plugin: *plugin,
            raw,
            devices: Vec::new(),
            platform_name: String::new(),
        };

        let mut name_args: sys::PJRT_Client_PlatformName_Args = new_args();
        name_args.client = raw;
        // SAFETY: live client; the name is borrowed from it and copied immediately.
        unsafe { api.check((api.fns.PJRT_Client_PlatformName)(&mut name_args))? };
        // SAFETY: the plugin returned `platform_name_size` bytes at `platform_name`.
        inner.platform_name =
            unsafe { string_from_raw(name_args.platform_name, name_args.platform_name_size) };

        let mut dev_args: sys::PJRT_Client_AddressableDevices_Args = new_args();
        dev_args.client = raw;
        // SAFETY: live client; the array is owned by the client and copied immediately.
        unsafe { api.check((api.fns.PJRT_Client_AddressableDevices)(&mut dev_args))? };
        // SAFETY: the plugin returned `num_addressable_devices` pointers.
        let raws = unsafe {
            vec_from_raw(
                dev_args.addressable_devices,
                dev_args.num_addressable_devices,
            )
        };
        for (index, raw) in raws.into_iter().enumerate() {
            let id = device_id(api, raw)?;
            inner.devices.push(Device { raw, index, id });
        }
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// A client with at least `n` addressable devices. The CPU plugin is asked for exactly `n`
    /// (`cpu_device_count`); a plugin that does not know that option (GPU plugins reject it as
    /// an unexpected option name) is created without options and must have `n` devices of its
    /// own. Errors are one line naming the plugin.
    pub fn with_devices(plugin: &Plugin, n: usize) -> Result<Client> {
        let path = plugin.path().display().to_string();
        let in_context = |e: Error| match e {
            Error::Pjrt { code, message } => Error::Pjrt {
                code,
                message: format!("{path}: {}", message.lines().next().unwrap_or("").trim()),
            },
            other => other,
        };
        let asked = ClientOptions {
            cpu_device_count: Some(n as i64),
        };
        let client = match Client::new(plugin, &asked) {
            Err(Error::Pjrt { message, .. })
                if message.contains("cpu_device_count")
                    && message.to_ascii_lowercase().contains("option") =>
            {
                Client::new(plugin, &ClientOptions::default()).map_err(in_context)?
            }
            other => other.map_err(in_context)?,
        };
        if client.device_count() < n {
            return Err(Error::InvalidArgument(format!(
                "{path} ({}) has {} addressable devices; {n} are needed",
                client.platform_name(),
                client.device_count()
            )));
        }
        Ok(client)
    }

    /// The plugin this client was created from.
    pub fn plugin(&self) -> Plugin {
        self.inner.plugin
    }

    /// The devices this process can address, in PJRT's order.
    pub fn addressable_devices(&self) -> &[Device] {
        &self.inner.devices
    }

    /// Number of addressable devices.
    pub fn device_count(&self) -> usize {
        self.inner.devices.len()
    }

    /// `PJRT_Client_PlatformName`, e.g. `"cpu"`.
    pub fn platform_name(&self) -> &str {
        &self.inner.platform_name
    }
}

pub(crate) fn device_id(api: &PluginInner, raw: *mut sys::PJRT_Device) -> Result<i32> {
    let mut desc_args: sys::PJRT_Device_GetDescription_Args = new_args();
    desc_args.device = raw;
    // SAFETY: `raw` is a device owned by a live client.
    unsafe { api.check((api.fns.PJRT_Device_GetDescription)(&mut desc_args))? };
    let mut id_args: sys::PJRT_DeviceDescription_Id_Args = new_args();
    id_args.device_description = desc_args.device_description;
    // SAFETY: the description is owned by the device.
    unsafe { api.check((api.fns.PJRT_DeviceDescription_Id)(&mut id_args))? };
    Ok(id_args.id)
}
