"""What people are shown, as plain values, whatever shows it: the status page (status_page/) and, in time, the
`status` command. Nothing here writes, nothing here formats HTML; each module builds one view from the journal,
the spool and the daemon's health."""
