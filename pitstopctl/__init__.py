"""`pitstop`: the admin command line (plan, status, retry, release, convert-kured). It reads what
the brain reads and writes only what a person may write; the brain never imports it."""
