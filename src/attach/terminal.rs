//! The local terminal: raw mode (restored on drop, whatever way we leave) and its size.

use std::io;
use std::os::fd::RawFd;

/// Raw mode on a terminal until dropped. A no-op when the fd is no terminal (input piped in).
pub struct RawMode {
    fd: RawFd,
    saved: Option<libc::termios>,
}

impl RawMode {
    /// Switches `fd` to raw mode: every byte goes to the session as typed, Ctrl-C included,
    /// and the session's terminal (not ours) echoes.
    pub fn enable(fd: RawFd) -> io::Result<RawMode> {
        // SAFETY: isatty/tcgetattr/cfmakeraw/tcsetattr on an fd we were given, with a termios
        // we own.
        unsafe {
            if libc::isatty(fd) != 1 {
                return Ok(RawMode { fd, saved: None });
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(RawMode {
                fd,
                saved: Some(saved),
            })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restoring the settings read from the same fd.
            unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, saved) };
        }
    }
}

/// The terminal's size as (rows, cols), or `None` when `fd` is no terminal.
pub fn size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ fills the winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0)
            .then_some((ws.ws_row, ws.ws_col))
    }
}
