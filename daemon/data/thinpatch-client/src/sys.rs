//! The few C functions the client needs, declared by hand (the crate has no dependencies).
//! `unsafe extern` keeps the declarations valid under editions 2021 and 2024.
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;

unsafe extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
    fn geteuid() -> u32;
}

const RTLD_NOW: c_int = 2;
#[cfg(target_os = "macos")]
const RTLD_DEFAULT: *mut c_void = -2isize as *mut c_void;
#[cfg(not(target_os = "macos"))]
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

/// A library loaded for the life of the process: patches are never unloaded, as in subsecond,
/// because code from them may still be running on some thread.
#[derive(Clone, Copy)]
pub struct Library(*mut c_void);

fn last_dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc.
    let message = unsafe { dlerror() };
    if message.is_null() {
        "unknown dlopen error".to_string()
    } else {
        unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
    }
}

/// `dlopen(path, RTLD_NOW)`.
pub fn open_library(path: &str) -> Result<Library, String> {
    let c_path = CString::new(path).map_err(|_| format!("library path contains a NUL byte: {path:?}"))?;
    // SAFETY: a valid C string; loading runs the library's initialisers, which is the point.
    let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        return Err(last_dl_error());
    }
    Ok(Library(handle))
}

fn symbol(handle: *mut c_void, name: &CStr) -> Option<usize> {
    // SAFETY: dlsym only reads the handle and the name.
    let address = unsafe { dlsym(handle, name.as_ptr()) } as usize;
    (address != 0).then_some(address)
}

/// Runtime address of `main` in the library.
pub fn library_main(library: Library) -> Option<usize> {
    symbol(library.0, c"main")
}

/// Runtime address of this program's `main` (exported dynamically by a captured build).
pub fn program_main() -> Option<usize> {
    symbol(RTLD_DEFAULT, c"main")
}

pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { geteuid() }
}

/// The uid of the process at the other end of a connected Unix socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_uid(stream: &UnixStream) -> Result<u32, String> {
    #[repr(C)]
    struct UCred {
        pid: i32,
        uid: u32,
        gid: u32,
    }
    unsafe extern "C" {
        fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut u32) -> c_int;
    }
    const SOL_SOCKET: c_int = 1;
    const SO_PEERCRED: c_int = 17;
    let mut cred = UCred { pid: 0, uid: u32::MAX, gid: u32::MAX };
    let mut len = std::mem::size_of::<UCred>() as u32;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let status = unsafe {
        getsockopt(stream.as_raw_fd(), SOL_SOCKET, SO_PEERCRED, &mut cred as *mut UCred as *mut c_void, &mut len)
    };
    if status != 0 {
        return Err(format!("SO_PEERCRED failed: {}", std::io::Error::last_os_error()));
    }
    Ok(cred.uid)
}

/// The uid of the process at the other end of a connected Unix socket.
#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd", target_os = "openbsd", target_os = "netbsd"))]
pub fn peer_uid(stream: &UnixStream) -> Result<u32, String> {
    unsafe extern "C" {
        fn getpeereid(fd: c_int, uid: *mut u32, gid: *mut u32) -> c_int;
    }
    let (mut uid, mut gid) = (u32::MAX, u32::MAX);
    // SAFETY: both pointers are valid for writes.
    if unsafe { getpeereid(stream.as_raw_fd(), &mut uid, &mut gid) } != 0 {
        return Err(format!("getpeereid failed: {}", std::io::Error::last_os_error()));
    }
    Ok(uid)
}
