"""Exit codes of the `cedge` command and the processes it runs, one meaning each.

Why distinct codes: systemd and scripts act on them.  A unit file's ``RestartPreventExitStatus=``
stops a restart loop on a wrong profile or a missing extra (restarting cannot fix either), while a
device or disk failure at start and a hung main loop are restarted (``Restart=on-failure``).
Errors themselves go to stderr as one ``error: ...`` line (agent/cli_output.py).

An unreachable broker is not an exit: the agent starts, buffers in its outbox and logs a WARNING
with back-off until the broker answers (agent/link/mqtt_link.py).
"""

from __future__ import annotations

#: Done.
EXIT_OK = 0
#: The command ran but failed on its input (a spectrum file it cannot read, no agent status to show).
EXIT_FAILED = 1
#: Usage or configuration: a bad option (click's own usage errors are 2 too), an invalid or
#: unreadable profile or config file, an unknown driver name.  Fix the command or the file.
EXIT_USAGE = 2
#: A device or the file system failed at start (state directory cannot be created or written).
EXIT_DEVICE_IO = 3
#: This installation lacks the extra the command or the profile needs (``pip install 'customs-edge[gamma]'``).
EXIT_MISSING_EXTRA = 4
#: The watchdog found the main loop hung and ended the process (BSD sysexits' EX_SOFTWARE).
EXIT_WATCHDOG = 70
