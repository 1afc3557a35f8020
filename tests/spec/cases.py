"""The table of user mistakes: files in, the exact `file:line:col: message` lines out.

Each case is (id, files, expected). `files` maps a file name to its text (str, or bytes for
encoding cases); the first file is the one checked. HEADER is 3 lines, so bodies start at line 4.
"""

from __future__ import annotations

HEADER = "harvest: 1\nenvironment: dev\napp: agents\n"

CASES: list[tuple[str, dict[str, str | bytes], list[str]]] = [
    # -- names ---------------------------------------------------------------------------
    ("volume name with a space",
     {"env.yaml": HEADER + "volumes:\n  agent state: {}\n"},
     ["env.yaml:5:3: volumes[agent state]: volume name 'agent state' has characters Modal does not allow "
      "(' '); use letters, digits, '-', '_' and '.'"]),
    ("secret name too long",
     {"env.yaml": HEADER + "secrets:\n  " + "s" * 65 + ":\n    from_env: [A]\n"},
     ["env.yaml:5:3: secrets." + "s" * 65 + ": secret name '" + "s" * 65 + "' is 65 characters long; "
      "Modal allows at most 64"]),
    ("name shaped like an app id",
     {"env.yaml": HEADER + "volumes:\n  ap-abcdefghijklmnopqrstuv: {}\n"},
     ["env.yaml:5:3: volumes.ap-abcdefghijklmnopqrstuv: volume name 'ap-abcdefghijklmnopqrstuv' looks like "
      "a Modal app id (ap-...); choose another name"]),
    ("environment name reserved prefix",
     {"env.yaml": "harvest: 1\nenvironment: en-prod\napp: agents\n"},
     ["env.yaml:2:14: environment: environment name 'en-prod' starts with 'en-', which Modal reserves for "
      "environment ids"]),
    ("environment name with a dot",
     {"env.yaml": "harvest: 1\nenvironment: prod.eu\napp: agents\n"},
     ["env.yaml:2:14: environment: environment name 'prod.eu' is not valid: start with a letter or digit, "
      "then use only letters, digits, '-' and '_'"]),
    ("image named like a built-in base",
     {"env.yaml": HEADER + "images:\n  registry:\n    from: debian_slim\n"},
     ["env.yaml:5:3: images.registry: 'registry' is a built-in base (from: registry); give the image "
      "another name"]),
    ("volume named like harvest's state volume",
     {"env.yaml": HEADER + "volumes:\n  harvest-state: {}\n"},
     ["env.yaml:5:3: volumes.harvest-state: volume name 'harvest-state' is reserved by harvest (it keeps "
      "its state record and lock under this name); choose another name"]),
    ("secret named like harvest's lock",
     {"env.yaml": HEADER + "secrets:\n  harvest-locks:\n    from_env: [A]\n"},
     ["env.yaml:5:3: secrets.harvest-locks: secret name 'harvest-locks' is reserved by harvest (it keeps "
      "its state record and lock under this name); choose another name"]),
    # -- unknown keys --------------------------------------------------------------------
    ("misspelt top-level section",
     {"env.yaml": HEADER + "volume:\n  data: {}\n"},
     ["env.yaml:4:1: unknown key `volume`; did you mean `volumes`?"]),
    ("misspelt image key",
     {"env.yaml": HEADER + "images:\n  base:\n    from: debian_slim\n    pipp: [numpy]\n"},
     ["env.yaml:7:5: images.base: unknown key `pipp`; did you mean `pip`?"]),
    ("modal's spelling of a retries key",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    task: reload-volumes\n"
                           "    retries: {max_retries: 3}\n"},
     ["env.yaml:8:5: crons.c.retries: missing required key `max` (the number of retries)",
      "env.yaml:8:15: crons.c.retries: unknown key `max_retries`; did you mean `max`?"]),
    ("unknown key that looks like pydantic's key marker",
     {"env.yaml": HEADER + "\"[key]\": 1\n"},
     ["env.yaml:4:1: unknown key `[key]`; expected one of: harvest, environment, app, settings, images, volumes, "
      "secrets, snapshots, sandboxes, crons, moved, removed, extends (or an `x-` key, which is ignored)"]),
    ("unknown key without a close match",
     {"env.yaml": HEADER + "volumes:\n  data:\n    size: 10GiB\n"},
     ["env.yaml:6:5: volumes.data: unknown key `size`; expected one of: version, protect"]),
    # -- wrong types ---------------------------------------------------------------------
    ("a string where a list is expected",
     {"env.yaml": HEADER + "images:\n  base:\n    from: debian_slim\n    apt: git\n"},
     ["env.yaml:7:10: images.base.apt: expected a list, got a string; write a list, e.g. [item] or one "
      "`- item` per line"]),
    ("yes is a string in YAML 1.2",
     {"env.yaml": HEADER + "volumes:\n  data:\n    protect: yes\n"},
     ["env.yaml:6:14: volumes.data.protect: expected true or false, got a string"]),
    ("env value that is a number",
     {"env.yaml": HEADER + "images:\n  base:\n    from: debian_slim\n    env: {PYTHONUNBUFFERED: 1}\n"},
     ["env.yaml:7:29: images.base.env.PYTHONUNBUFFERED: expected a string, got a number; quote it: \"1\""]),
    ("unquoted python version",
     {"env.yaml": HEADER + "images:\n  base:\n    from: debian_slim\n    python: 3.10\n"},
     ["env.yaml:7:13: images.base.python: write the Python version as a quoted string, like \"3.11\" "
      "(unquoted, YAML reads it as the number 3.1)"]),
    ("unsupported python version",
     {"env.yaml": HEADER + "images:\n  base:\n    from: micromamba\n    python: \"2.7\"\n"},
     ["env.yaml:7:13: images.base.python: Python '2.7' is not supported by Modal's image builder: use "
      "\"3.10\" to \"3.15\""]),
    ("volume version 3",
     {"env.yaml": HEADER + "volumes:\n  data:\n    version: 3\n"},
     ["env.yaml:6:14: volumes.data.version: expected 1 or 2, got 3"]),
    ("a section that is a list",
     {"env.yaml": HEADER + "volumes:\n  - data\n"},
     ["env.yaml:5:3: volumes: expected a mapping (key: value), got a list"]),
    ("missing required key",
     {"env.yaml": HEADER + "images:\n  base:\n    python: \"3.11\"\n"},
     ["env.yaml:5:3: images.base: missing required key `from` (debian_slim, micromamba, registry, "
      "dockerfile or another image's name)"]),
    ("missing app",
     {"env.yaml": "harvest: 1\nenvironment: dev\n"},
     ["env.yaml:1:1: missing required key `app` (the Modal app name, e.g. `app: harvest-agents`)"]),
    ("registry image without ref",
     {"env.yaml": HEADER + "images:\n  custom:\n    from: registry\n"},
     ["env.yaml:6:11: images.custom.from: a registry image needs `ref:`, e.g. ref: python:3.11-slim"]),
    ("python on a layered image",
     {"env.yaml": HEADER + "images:\n  base: {from: debian_slim}\n  agent:\n    from: base\n"
                           "    python: \"3.12\"\n"},
     ["env.yaml:8:13: images.agent.python: a layered image inherits Python from image 'base'; remove "
      "`python`"]),
    ("relative mount path",
     {"env.yaml": HEADER + "volumes: {data: {}}\nsandboxes:\n  s:\n    image: i\n    volumes: {mnt/data: data}\n"
                           "images: {i: {from: debian_slim}}\n"},
     ["env.yaml:8:15: sandboxes.s.volumes[mnt/data]: 'mnt/data' must be an absolute path (starting with /)"]),
    ("image file that does not exist",
     {"env.yaml": HEADER + "images:\n  base:\n    from: debian_slim\n    files: {/root/jobs: jobz}\n"},
     ["env.yaml:7:25: images.base.files[/root/jobs]: 'jobz' is not a file or folder (looked for <dir>/jobz); "
      "paths are relative to this file"]),
    ("image file put at the container's root",
     {"env.yaml": HEADER + "images:\n  base:\n    from: debian_slim\n    files: {/: env.yaml}\n"},
     ["env.yaml:7:13: images.base.files[/]: '/' must be a plain absolute path in the container, not / and "
      "without '..', '//' or a trailing '/', such as /root/jobs"]),
    ("python source as a dotted name",
     {"env.yaml": HEADER + "images:\n  base:\n    from: debian_slim\n    python_source: [jobs.refresh]\n"},
     ["env.yaml:7:21: images.base.python_source[0]: 'jobs.refresh' is not a top-level Python module or "
      "package name (as in `import jobs`); list the package, not a path or a dotted name"]),
    ("build steps after local files",
     {"env.yaml": HEADER + "images:\n  base:\n    from: debian_slim\n    files: {/root/env.yaml: env.yaml}\n"
                           "  agent:\n    from: base\n    pip: [requests]\n"},
     ["env.yaml:9:11: images.agent.from: image 'agent' adds build steps to image 'base', which ships local "
      "files (`files`, `python_source`: added when a container starts, after every build step); move them "
      "to 'agent' or to an image layered on it"]),
    # -- references ----------------------------------------------------------------------
    ("sandbox image not declared",
     {"env.yaml": HEADER + "images:\n  agent: {from: debian_slim}\nsandboxes:\n  s:\n    image: agnet\n"},
     ["env.yaml:8:12: sandboxes.s.image: image or snapshot 'agnet' is not declared; did you mean 'agent'?"]),
    ("volume mount not declared",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n"
                           "    volumes: {/mnt/shared: agent-state}\n"},
     ["env.yaml:8:28: sandboxes.s.volumes[/mnt/shared]: volume 'agent-state' is not declared; declare it "
      "under `volumes:`"]),
    ("cron secret not declared",
     {"env.yaml": HEADER + "secrets:\n  openai: {from_env: [OPENAI_API_KEY]}\ncrons:\n  c:\n    every: 1h\n"
                           "    task: reload-volumes\n    secrets: [github]\n"},
     ["env.yaml:10:15: crons.c.secrets[0]: secret 'github' is not declared under `secrets:` "
      "(declared: openai)"]),
    ("image cycle",
     {"env.yaml": HEADER + "images:\n  a: {from: b}\n  b: {from: c}\n  c: {from: a}\n"},
     ["env.yaml:5:13: images.a.from: images form a cycle through `from:`: a -> b -> c -> a; one of them "
      "must start from a built-in base"]),
    ("snapshot made from a snapshot",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsnapshots:\n  warm: {image: i}\n"
                           "  hot: {image: warm}\n"},
     ["env.yaml:7:16: snapshots.hot.image: image 'warm' is not declared (a snapshot starts from an image, "
      "not another snapshot) under `images:` (declared: i)"]),
    # -- crons ---------------------------------------------------------------------------
    ("cron string with four fields",
     {"env.yaml": HEADER + "crons:\n  c:\n    schedule: \"*/30 * * *\"\n    task: refresh-snapshots\n"},
     ["env.yaml:6:15: crons.c.schedule: schedule '*/30 * * *' has 4 fields; a cron string has 5: minute "
      "hour day-of-month month day-of-week, e.g. \"*/30 * * * *\""]),
    ("cron string out of range",
     {"env.yaml": HEADER + "crons:\n  c:\n    schedule: \"61 * * * *\"\n    task: refresh-snapshots\n"},
     ["env.yaml:6:15: crons.c.schedule: schedule '61 * * * *' is not a valid cron string (minute hour "
      "day-of-month month day-of-week, e.g. \"*/30 * * * *\")"]),
    ("misspelt timezone",
     {"env.yaml": HEADER + "crons:\n  c:\n    schedule: \"0 9 * * *\"\n    timezone: Europe/Pariss\n"
                           "    task: refresh-snapshots\n"},
     ["env.yaml:7:15: crons.c.timezone: unknown timezone 'Europe/Pariss'; did you mean 'Europe/Paris'?"]),
    ("schedule and every together",
     {"env.yaml": HEADER + "crons:\n  c:\n    schedule: \"0 9 * * *\"\n    every: 1h\n    task: reload-volumes\n"},
     ["env.yaml:7:12: crons.c.every: use either `schedule` or `every`, not both"]),
    ("cron without task or command",
     {"env.yaml": HEADER + "crons:\n  nightly:\n    every: 24h\n"},
     ["env.yaml:5:3: crons.nightly: a cron needs `task:` (refresh-snapshots | reload-volumes) or "
      "`command: [...]`"]),
    ("unknown task",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    task: refresh\n"},
     ["env.yaml:7:11: crons.c.task: expected 'refresh-snapshots' or 'reload-volumes', got 'refresh'"]),
    ("command written as one string",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    command: python -m jobs.refresh\n"},
     ["env.yaml:7:14: crons.c.command: write command as a list of arguments, e.g. [\"python\", \"-m\", "
      "\"jobs.refresh\"]"]),
    ("retries over Modal's limit",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    task: reload-volumes\n    retries: 11\n"},
     ["env.yaml:8:14: crons.c.retries: retries 11 is outside 0 to 10 (Modal allows at most 10 retries)"]),
    ("retry backoff out of range",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    task: reload-volumes\n"
                           "    retries: {max: 3, backoff: 20}\n"},
     ["env.yaml:8:32: crons.c.retries.backoff: backoff 20 is outside Modal's range of 1.0 (fixed delay) "
      "to 10.0"]),
    ("retry delay over a minute",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    task: reload-volumes\n"
                           "    retries: {max: 3, max_delay: 2m}\n"},
     ["env.yaml:8:34: crons.c.retries.max_delay: max_delay 2m is over Modal's retry limit of 60s"]),
    ("cron cpu over Modal's range",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    task: reload-volumes\n    cpu: 100\n"},
     ["env.yaml:8:10: crons.c.cpu: cpu 100 is outside Modal's range of 0.125 to 64 cores"]),
    ("cron memory in decimal units",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    task: reload-volumes\n    memory: 2GB\n"},
     ["env.yaml:8:13: crons.c.memory: '2GB': use binary units MiB or GiB (Modal counts memory in MiB), "
      "e.g. 2GiB"]),
    ("cron GPU unknown",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    task: reload-volumes\n    gpu: V100\n"},
     ["env.yaml:8:10: crons.c.gpu: unknown GPU 'V100' (Modal's GPUs: T4, L4, A10, A10G, L40S, A100, "
      "A100-40GB, A100-80GB, H100, H100!, H200, B200, B200+, with an optional :count such as \"A100:2\")"]),
    ("cron region empty list",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    task: reload-volumes\n    region: []\n"},
     ["env.yaml:8:13: crons.c.region: region is a region name (\"us-east\") or a non-empty list of them"]),
    ("cron max_containers zero",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    task: reload-volumes\n    max_containers: 0\n"},
     ["env.yaml:8:21: crons.c.max_containers: max_containers 0 is outside 1 to 2147483647"]),
    ("snapshot ttl under an hour",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsnapshots:\n  warm:\n    image: i\n    ttl: 10m\n"},
     ["env.yaml:8:10: snapshots.warm.ttl: ttl 10m is under the minimum of 1h"]),
    ("snapshot ttl in words",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsnapshots:\n  warm:\n    image: i\n    ttl: forever\n"},
     ["env.yaml:8:10: snapshots.warm.ttl: 'forever' is not a duration: write a number with a unit, such as "
      "30s, 10m, 1h or 1h30m (units: ms, s, m, h, d); or `none` to keep snapshots for ever"]),
    # -- durations, sizes, limits --------------------------------------------------------
    ("duration without a unit",
     {"env.yaml": HEADER + "crons:\n  c:\n    every: 1h\n    task: reload-volumes\n    timeout: 300\n"},
     ["env.yaml:8:14: crons.c.timeout: a duration needs a unit: write 300s, or use m (minutes), h (hours), "
      "d (days)"]),
    ("duration in words",
     {"env.yaml": HEADER + "snapshots:\n  warm:\n    image: i\n    max_age: 10 minutes\nimages: {i: {from: debian_slim}}\n"},
     ["env.yaml:7:14: snapshots.warm.max_age: '10 minutes' is not a duration: write a number with a unit, "
      "such as 30s, 10m, 1h or 1h30m (units: ms, s, m, h, d)"]),
    ("sandbox timeout over 24h",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    timeout: 25h\n"},
     ["env.yaml:8:14: sandboxes.s.timeout: timeout 25h is over Modal's limit of 24h"]),
    ("decimal size unit",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    memory: 1GB\n"},
     ["env.yaml:8:13: sandboxes.s.memory: '1GB': use binary units MiB or GiB (Modal counts memory in MiB), "
      "e.g. 1GiB"]),
    ("size without a unit",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    memory: 1024\n"},
     ["env.yaml:8:13: sandboxes.s.memory: a size needs a unit: write 1024MiB or 1024GiB"]),
    ("memory under Modal's minimum",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    memory: 64MiB\n"},
     ["env.yaml:8:13: sandboxes.s.memory: memory 64MiB is outside Modal's range of 128MiB to 336GiB"]),
    ("cpu over Modal's range",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    cpu: 128\n"},
     ["env.yaml:8:10: sandboxes.s.cpu: cpu 128 is outside Modal's range of 0.125 to 64 cores"]),
    ("idle timeout longer than timeout",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    timeout: 10m\n"
                           "    idle_timeout: 1h\n"},
     ["env.yaml:9:19: sandboxes.s.idle_timeout: idle_timeout is longer than timeout; it would never apply"]),
    # -- secrets -------------------------------------------------------------------------
    ("secret with an inline value",
     {"env.yaml": HEADER + "secrets:\n  openai:\n    value: sk-live-abc123\n"},
     ["env.yaml:6:5: secrets.openai: unknown key `value`: a secret never holds values in YAML; read them "
      "at apply time with `from_env: [VAR]` or `from_dotenv: FILE`"]),
    ("secret value pasted into from_env",
     {"env.yaml": HEADER + "secrets:\n  openai:\n    from_env: {OPENAI_API_KEY: sk-live-abc123}\n"},
     ["env.yaml:6:32: secrets.openai.from_env.OPENAI_API_KEY: from_env maps a key to the NAME of an "
      "environment variable to read at apply time (like OPENAI_API_KEY); this value is not a variable name. "
      "Never write secret values in YAML"]),
    ("secret with no source",
     {"env.yaml": HEADER + "secrets:\n  openai: {}\n"},
     ["env.yaml:5:3: secrets.openai: a secret needs `from_env: [VAR, ...]` or `from_dotenv: PATH` (values "
      "never go in YAML)"]),
    ("from_env variable listed twice",
     {"env.yaml": HEADER + "secrets:\n  s:\n    from_env: [A, B, A]\n"},
     ["env.yaml:6:22: secrets.s.from_env[2]: variable 'A' is listed twice"]),
    # -- sandbox profiles: hardware, placement, network ---------------------------------------
    ("sandbox GPU misspelt",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    gpu: H10\n"},
     ["env.yaml:8:10: sandboxes.s.gpu: unknown GPU 'H10'; did you mean 'H100'? (Modal's GPUs: T4, L4, A10, "
      "A10G, L40S, A100, A100-40GB, A100-80GB, H100, H100!, H200, B200, B200+, with an optional :count such "
      "as \"A100:2\")"]),
    ("sandbox GPU count over 8",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    gpu: \"T4:9\"\n"},
     ["env.yaml:8:10: sandboxes.s.gpu: GPU count '9' must be a whole number from 1 to 8 (e.g. \"T4:2\")"]),
    ("sandbox region with capitals",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    region: [us-east, EU]\n"},
     ["env.yaml:8:23: sandboxes.s.region[1]: region 'EU' is not a Modal region name such as \"us-east\" or "
      "\"eu-west-1\""]),
    ("sandbox cloud not Modal's",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    cloud: azure\n"},
     ["env.yaml:8:12: sandboxes.s.cloud: expected 'aws', 'gcp', 'oci' or 'auto', got 'azure'"]),
    ("sandbox allowlist with a URL",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    outbound_domain_allowlist: [\"https://api.openai.com\"]\n"},
     ["env.yaml:8:33: sandboxes.s.outbound_domain_allowlist[0]: 'https://api.openai.com' is not a domain "
      "name such as \"api.openai.com\" or \"*.github.com\" (lowercase, no scheme, port or path)"]),
    ("sandbox CIDR with host bits",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    inbound_cidr_allowlist: [10.0.0.1/8]\n"},
     ["env.yaml:8:30: sandboxes.s.inbound_cidr_allowlist[0]: '10.0.0.1/8' is not a CIDR block such as "
      "\"10.0.0.0/8\" or \"2001:db8::/32\" (10.0.0.1/8 has host bits set)"]),
    ("sandbox blocked network with an allowlist",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    block_network: true\n    outbound_cidr_allowlist: [10.0.0.0/8]\n"},
     ["env.yaml:9:30: sandboxes.s.outbound_cidr_allowlist: `outbound_cidr_allowlist` cannot be used with "
      "`block_network: true` (no network at all); remove one of them"]),
    ("sandbox blocked network with a port",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    block_network: true\n    encrypted_ports: [8443]\n"},
     ["env.yaml:9:22: sandboxes.s.encrypted_ports: `encrypted_ports` cannot be used with "
      "`block_network: true` (no network at all); remove one of them"]),
    ("sandbox port listed twice",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    encrypted_ports: [8443, 8443]\n"},
     ["env.yaml:8:22: sandboxes.s.encrypted_ports: 8443 is listed twice"]),
    ("sandbox port out of range",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    encrypted_ports: [70000]\n"},
     ["env.yaml:8:23: sandboxes.s.encrypted_ports[0]: port 70000 is outside 1 to 65535"]),
    ("sandbox relative workdir",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    workdir: work\n"},
     ["env.yaml:8:14: sandboxes.s.workdir: 'work' must be an absolute path (starting with /)"]),
    ("sandbox env value that is a number",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    env: {WORKERS: 4}\n"},
     ["env.yaml:8:20: sandboxes.s.env.WORKERS: expected a string, got a number; quote it: \"4\""]),
    ("sandbox tag with a space",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    tags: {team: a b}\n"},
     ["env.yaml:8:18: sandboxes.s.tags.team: tag value 'a b' must be 1-63 characters of letters, digits, "
      "'.', '_' and '-'"]),
    ("sandbox expected usage longer than the timeout",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    timeout: 1m\n    expected: {runs_per_day: 1000, duration: 2m}\n"},
     ["env.yaml:9:15: sandboxes.s.expected: expected.duration is longer than timeout: a sandbox is stopped "
      "at its timeout"]),
    ("sandbox expected usage misspelt",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    expected: {runs_a_day: 10, duration: 30s}\n"},
     ["env.yaml:8:5: sandboxes.s.expected: missing required key `runs_per_day`",
      "env.yaml:8:16: sandboxes.s.expected: unknown key `runs_a_day`; did you mean `runs_per_day`?"]),
    ("sandbox expected runs negative",
     {"env.yaml": HEADER + "images: {i: {from: debian_slim}}\nsandboxes:\n  s:\n    image: i\n    expected: {runs_per_day: -5, duration: 30s}\n"},
     ["env.yaml:8:30: sandboxes.s.expected.runs_per_day: runs_per_day -5 must not be negative"]),
    # -- environment settings ------------------------------------------------------------
    ("settings: unknown key",
     {"env.yaml": HEADER + "settings:\n  budjet: 500\n"},
     ["env.yaml:5:3: settings: unknown key `budjet`; did you mean `budget`?"]),
    ("settings: budget of zero",
     {"env.yaml": HEADER + "settings:\n  budget: 0\n"},
     ["env.yaml:5:11: settings.budget: budget 0 must be a positive number of US dollars per billing "
      "cycle, e.g. 500 (or `none` for no budget)"]),
    ("settings: budget as a word other than none",
     {"env.yaml": HEADER + "settings:\n  budget: unlimited\n"},
     ["env.yaml:5:11: settings.budget: budget must be a number of US dollars per billing cycle (e.g. 500), "
      "or `none` for no budget; got a string"]),
    ("settings: negative task cap",
     {"env.yaml": HEADER + "settings:\n  max_concurrent_tasks: -1\n"},
     ["env.yaml:5:25: settings.max_concurrent_tasks: max_concurrent_tasks -1 is outside 0 to 2147483647"]),
    ("settings: fractional GPU cap",
     {"env.yaml": HEADER + "settings:\n  max_concurrent_gpus: 1.5\n"},
     ["env.yaml:5:24: settings.max_concurrent_gpus: max_concurrent_gpus must be a whole number, got a "
      "number"]),
    ("settings: unquoted builder version",
     {"env.yaml": HEADER + "settings:\n  image_builder_version: 2024.10\n"},
     ["env.yaml:5:26: settings.image_builder_version: write the image builder version as a quoted string, "
      "like \"2025.06\" (unquoted, YAML reads it as the number 2024.1)"]),
    ("settings: unknown builder version",
     {"env.yaml": HEADER + "settings:\n  image_builder_version: latest\n"},
     ["env.yaml:5:26: settings.image_builder_version: image_builder_version 'latest' is not a Modal image "
      "builder version: use YYYY.MM (known: 2023.12, 2024.04, 2024.10, 2025.06, PREVIEW)"]),
    ("settings: web suffix with capitals",
     {"env.yaml": HEADER + "settings:\n  web_suffix: Prod_EU\n"},
     ["env.yaml:5:15: settings.web_suffix: web_suffix 'Prod_EU' is not valid in a URL: use up to 63 "
      "lowercase letters, digits and '-', not starting or ending with '-' (or \"\" for none)"]),
    ("settings: yes is not a boolean",
     {"env.yaml": HEADER + "settings:\n  block_unauthenticated_resources: yes\n"},
     ["env.yaml:5:36: settings.block_unauthenticated_resources: expected true or false, got a string"]),
    # -- the file as a whole -------------------------------------------------------------
    ("unknown format version",
     {"env.yaml": "harvest: 2\nenvironment: dev\napp: agents\n"},
     ["env.yaml:1:10: harvest: format version 2 is not supported: this harvest reads version 1 (upgrade "
      "harvest to read newer files)"]),
    ("no format version",
     {"env.yaml": "environment: dev\napp: agents\n"},
     ["env.yaml:1:1: missing `harvest: 1` (the format version) at the top of the file"]),
    ("extends a file that does not exist",
     {"env.yaml": HEADER + "extends: bsae.yaml\n"},
     ["env.yaml:4:10: extends: file 'bsae.yaml' not found (looked for bsae.yaml)"]),
    ("extends cycle",
     {"env.yaml": HEADER + "extends: a.yaml\n",
      "a.yaml": "harvest: 1\nextends: b.yaml\n",
      "b.yaml": "harvest: 1\nextends: a.yaml\n"},
     ["b.yaml:2:10: extends: cycle a.yaml -> b.yaml -> a.yaml"]),
    ("a mistake in the base file points into the base file",
     {"env.yaml": HEADER + "extends: base.yaml\nvolumes:\n  data: {protect: false}\n",
      "base.yaml": "harvest: 1\nvolumes:\n  data:\n    version: 4\n"},
     ["base.yaml:4:14: volumes.data.version: expected 1 or 2, got 4"]),
    ("two files for one environment",
     {"env.yaml": HEADER, "env2.yaml": HEADER},
     ["env2.yaml:2:14: environment 'dev' is also described by env.yaml; one file per Modal environment"]),
    # -- YAML ----------------------------------------------------------------------------
    ("YAML syntax error",
     {"env.yaml": HEADER + "volumes:\n  data: version: 2\n"},
     ["env.yaml:5:16: YAML syntax error: mapping values are not allowed here"]),
    ("unclosed flow list",
     {"env.yaml": HEADER + "images:\n  base:\n    from: debian_slim\n    apt: [git, curl\n"},
     ["env.yaml:8:1: YAML syntax error: expected ',' or ']', but got '<stream end>' (while parsing a flow "
      "sequence started at line 7)"]),
    ("tab indentation",
     {"env.yaml": HEADER + "volumes:\n\tdata: {}\n"},
     ["env.yaml:5:1: YAML syntax error: found character '\\t' that cannot start any token (while scanning "
      "for the next token); indent with spaces, not tabs"]),
    ("duplicate keys",
     {"env.yaml": HEADER + "volumes:\n  data: {}\n  logs: {}\n  data: {version: 1}\napp: other\n"},
     ["env.yaml:7:3: duplicate key `data` (first at line 5); remove one of them",
      "env.yaml:8:1: duplicate key `app` (first at line 3); remove one of them"]),
    ("alias bomb",
     {"env.yaml": HEADER + "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
      + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                f"*{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))},
     ["env.yaml:7:1: aliases expand to more than 10000 values (an alias bomb?); refusing to expand them"]),
    ("custom YAML tag",
     {"env.yaml": HEADER + "secrets:\n  s:\n    from_env: !env OPENAI_API_KEY\n"},
     ["env.yaml:6:15: YAML tag !env is not supported: harvest files hold plain strings, numbers, booleans, "
      "lists and mappings"]),
    ("recursive alias",
     {"env.yaml": HEADER + "x-loop: &x [*x]\n"},
     ["env.yaml:4:9: an alias refers to the value that contains it (a recursive alias)"]),
    ("YAML set type",
     {"env.yaml": HEADER + "volumes: !!set {a, b}\n"},
     ["env.yaml:4:10: YAML tag !!set is not supported: harvest files hold plain strings, numbers, booleans, "
      "lists and mappings"]),
    ("escaped NUL in a string",
     {"env.yaml": HEADER + "images:\n  i:\n    from: debian_slim\n    run: [\"echo \\0\"]\n"},
     ["env.yaml:7:11: a NUL character (\\0) is not allowed in text"]),
    ("oversized file",
     {"env.yaml": HEADER + "#" * (1024 * 1024)},
     ["env.yaml:1:1: file is larger than 1 MiB; an environment file is a small YAML text"]),
    ("empty file",
     {"env.yaml": "# nothing here yet\n"},
     ["env.yaml:1:1: file is empty: an environment file is a mapping that starts with `harvest: 1`"]),
    ("top level is a list",
     {"env.yaml": "- harvest: 1\n"},
     ["env.yaml:1:1: the top level must be a mapping (keys such as `harvest:`, `environment:`, `images:`), "
      "not a list"]),
    ("Latin-1 file",
     {"env.yaml": (HEADER + "# caf\xe9\n").encode("latin-1")},
     ["env.yaml:4:6: not valid UTF-8 (byte 0xe9); save the file as UTF-8"]),
    ("UTF-16 file",
     {"env.yaml": HEADER.encode("utf-16")},
     ["env.yaml:1:1: file is UTF-16 encoded; save it as UTF-8"]),
    ("binary file",
     {"env.yaml": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"},
     ["env.yaml:3:1: binary data (a NUL byte): an environment file is UTF-8 YAML text"]),
    ("cron clashing with a sandbox profile's function",
     {"env.yaml": HEADER + "images:\n  base: {from: debian_slim}\nsandboxes:\n  agent: {image: base}\n"
      "crons:\n  sandbox-agent: {every: 1h, task: reload-volumes}\n"},
     ["env.yaml:9:18: crons.sandbox-agent: cron 'sandbox-agent' would deploy the same Modal function as "
      "sandbox profile 'agent' (deployed as `sandbox-<profile>`); rename the cron"]),
    ("control character",
     {"env.yaml": HEADER + "volumes: {d\x07: {}}\n"},
     ["env.yaml:4:12: character U+0007 is not allowed in YAML text"]),
    # -- moved and removed -----------------------------------------------------------------
    ("moved from a name still declared",
     {"env.yaml": HEADER + "volumes:\n  old: {}\n  new: {}\nmoved:\n  - {from: volume.old, to: volume.new}\n"},
     ["env.yaml:8:12: moved[0].from: volume.old is still declared under `volumes:`; a moved entry renames it "
      "to volume.new: remove the old name there"]),
    ("moved to a name not declared",
     {"env.yaml": HEADER + "secrets:\n  s: {from_env: [A]}\nmoved:\n  - from: secret.old\n    to: secret.neww\n"},
     ["env.yaml:8:9: moved[0].to: secret.neww is not declared under `secrets:`; declare the new name there "
      "(with the old one's settings)"]),
    ("moved across kinds",
     {"env.yaml": HEADER + "volumes:\n  v: {}\nmoved:\n  - {from: secret.v, to: volume.v}\n"},
     ["env.yaml:7:26: moved[0].to: `from` and `to` name the same kind of object (volume.a -> volume.b)"]),
    ("moved of a kind harvest cannot rename",
     {"env.yaml": HEADER + "moved:\n  - {from: snapshot.a, to: snapshot.b}\n"},
     ["env.yaml:5:12: moved[0].from: 'snapshot.a' is not an address `moved` takes: write KIND.NAME with KIND "
      "one of volume, secret, cron, sandbox, image",
      "env.yaml:5:28: moved[0].to: 'snapshot.b' is not an address `moved` takes: write KIND.NAME with KIND "
      "one of volume, secret, cron, sandbox, image"]),
    ("removed without destroy",
     {"env.yaml": HEADER + "removed:\n  - address: volume.scratch\n"},
     ["env.yaml:5:5: removed[0]: missing required key `destroy` (true: delete it; false: stop managing it "
      "and keep it in Modal)"]),
    ("removed but still declared",
     {"env.yaml": HEADER + "volumes:\n  scratch: {}\nremoved:\n  - {address: volume.scratch, destroy: true}\n"},
     ["env.yaml:7:15: removed[0].address: volume.scratch is still declared under `volumes:`; remove it there, "
      "or drop this entry to keep managing it"]),
    ("removed of an unknown kind",
     {"env.yaml": HEADER + "removed:\n  - {address: bucket.logs, destroy: true}\n"},
     ["env.yaml:5:15: removed[0].address: 'bucket.logs' is not an address `removed` takes: write KIND.NAME "
      "with KIND one of volume, secret, app (crons, sandbox profiles, images and snapshots go away when they "
      "leave the YAML)"]),
    ("removed app that still deploys crons",
     {"env.yaml": HEADER + "crons:\n  c: {every: 1h, task: reload-volumes}\n"
      "removed:\n  - {address: app.agents, destroy: true}\n"},
     ["env.yaml:7:15: removed[0].address: app.agents still deploys this file's crons and sandbox profiles; "
      "remove them first, or drop this entry"]),
    ("misspelt key in a removed entry",
     {"env.yaml": HEADER + "removed:\n  - {address: volume.v, destory: true}\n"},
     ["env.yaml:5:5: removed[0]: missing required key `destroy` (true: delete it; false: stop managing it "
      "and keep it in Modal)",
      "env.yaml:5:25: removed[0]: unknown key `destory`; did you mean `destroy`?"]),
]
