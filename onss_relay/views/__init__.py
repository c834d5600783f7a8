"""What people are shown, as plain values, whatever shows it: the status page (status_page/), the `status` command and
results/. Nothing here writes, nothing here formats HTML; each module builds one view from the journal,
the spool and the daemon's health."""
