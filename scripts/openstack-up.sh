#!/usr/bin/env bash
# openstack-up.sh DIR: real Keystone v3 and Glance v2 (Debian's python3-keystone/python3-glance)
# on 127.0.0.1, sqlite databases in DIR. Bootstraps an admin, region RegionOne with Keystone and
# Glance in the catalog, a project `stackhost` with a user `stackhost` (password) and an
# application credential for it, then writes DIR/env.json (endpoints and credentials) and
# DIR/clouds.yaml (clouds `stackhost`, `stackhost-appcred` and `admin`).
#
# Env: KS_PORT (5001), GL_PORT (9292), ADMIN_PASSWORD (admin-secret), USER_PASSWORD (user-secret),
#      GLANCE_IMPORT_METHODS (glance-direct,web-download), OWNER_PID (the services are stopped when
#      that process is gone: test binaries pass their own pid so nothing outlives them).
# Stop with scripts/openstack-down.sh DIR.
set -euo pipefail
D=$(realpath -m "${1:?usage: $0 DIR}")
KP=${KS_PORT:-5001}
GP=${GL_PORT:-9292}
ADMIN_PW=${ADMIN_PASSWORD:-admin-secret}
USER_PW=${USER_PASSWORD:-user-secret}
METHODS=${GLANCE_IMPORT_METHODS:-glance-direct,web-download}
OWNER=${OWNER_PID:-0}
PY=/usr/bin/python3 # not a pyenv/venv python: the packages live in Debian's dist-packages
KS=http://127.0.0.1:$KP
GL=http://127.0.0.1:$GP
here=$(cd "$(dirname "$0")" && pwd)
t0=$(date +%s%3N)

for p in "$KP" "$GP"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "openstack-up: port $p on 127.0.0.1 is already in use (set KS_PORT/GL_PORT)" >&2
    exit 1
  fi
done
if ! dpkg -s python3-keystone python3-glance >/dev/null 2>&1; then
  bash "$here/deps/openstack.sh"
fi
t_installed=$(date +%s%3N)

mkdir -p "$D"/{fernet-keys,credential-keys,images,staging,tasks}
chmod 700 "$D/fernet-keys" "$D/credential-keys"
rm -f "$D"/*.pid "$D/env.json"
trap 'set +e; for f in "$D"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
      echo "openstack-up: FAILED; logs: $D/keystone.log $D/glance.log $D/manage.log" >&2; tail -n 20 "$D/manage.log" >&2' EXIT

cat >"$D/keystone.conf" <<EOF
[DEFAULT]
log_file = $D/keystone.log
[database]
connection = sqlite:///$D/keystone.db?check_same_thread=false
[token]
provider = fernet
expiration = 3600
[fernet_tokens]
key_repository = $D/fernet-keys
[credential]
key_repository = $D/credential-keys
[identity]
# fast enough for tests; the default bcrypt cost makes every password auth take ~0.3 s
password_hash_rounds = 4
EOF

# Debian ships no standalone Keystone server: a threaded wsgiref server runs the WSGI app. Requests
# run one at a time: once in CI, with test binaries in parallel, an exception escaped Keystone during
# a password authentication (wsgiref's bare 500 "A server error occurred"). Keystone on sqlite in one
# process is not built for concurrent requests; a production Keystone runs several workers on a
# database server, so serialising here hides nothing the plugin would meet.
cat >"$D/keystone_serve.py" <<EOF
import socketserver, threading, wsgiref.simple_server as w
from keystone.server.wsgi import initialize_public_application
app, lock = initialize_public_application(), threading.Lock()
def serialised(environ, start_response):
    with lock:
        return list(app(environ, start_response))
class Quiet(w.WSGIRequestHandler):
    def log_message(self, *args): pass
class S(socketserver.ThreadingMixIn, w.WSGIServer): daemon_threads = True
w.make_server('127.0.0.1', $KP, serialised, server_class=S, handler_class=Quiet).serve_forever()
EOF
cat >"$D/glance-api-paste.ini" <<'EOF'
[pipeline:glance-api-keystone]
pipeline = healthcheck versionnegotiation authtoken context rootapp
[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app
[app:apiversions]
paste.app_factory = glance.api.versions:create_resource
[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory
[filter:healthcheck]
paste.filter_factory = oslo_middleware:Healthcheck.factory
[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory
[filter:context]
paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
delay_auth_decision = true
EOF
cat >"$D/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $GP
workers = 0
log_file = $D/glance.log
enabled_backends = fs:file
enabled_import_methods = [$METHODS]
[database]
connection = sqlite:///$D/glance.db
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $D/images/
[os_glance_staging_store]
filesystem_store_datadir = $D/staging/
[os_glance_tasks_store]
filesystem_store_datadir = $D/tasks/
[keystone_authtoken]
www_authenticate_uri = $KS
auth_url = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = glance
password = glance-pw
[paste_deploy]
flavor = keystone
config_file = $D/glance-api-paste.ini
[import_filtering_opts]
allowed_hosts = [127.0.0.1,localhost]
allowed_ports = []
EOF

km() { keystone-manage --config-file "$D/keystone.conf" "$@" >>"$D/manage.log" 2>&1; }
# The three set-up branches are independent: run them in parallel.
(km db_sync && km bootstrap --bootstrap-password "$ADMIN_PW" --bootstrap-region-id RegionOne \
  --bootstrap-admin-url "$KS/v3" --bootstrap-internal-url "$KS/v3" --bootstrap-public-url "$KS/v3") &
p1=$!
(km fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" &&
  km credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)") &
p2=$!
$PY -m glance.cmd.manage --config-file "$D/glance-api.conf" db_sync >>"$D/manage.log" 2>&1 &
p3=$!
wait $p1
wait $p2
wait $p3
# WAL: Keystone keeps a read transaction open after a password auth; with the default journal
# the next writer fails with "database is locked".
for db in keystone glance; do
  $PY -c "import sqlite3; sqlite3.connect('$D/$db.db').execute('PRAGMA journal_mode=WAL')"
done

start() { # name command...
  local name=$1
  shift
  OS_KEYSTONE_CONFIG_FILES="$D/keystone.conf" nohup "$@" >"$D/$name.out" 2>&1 </dev/null &
  local pid=$!
  echo $pid >"$D/$name.pid"
  if [ "$OWNER" -gt 0 ]; then # stop the service when its owner is gone
    nohup bash -c "while kill -0 $OWNER && kill -0 $pid; do sleep 1; done 2>/dev/null; kill $pid 2>/dev/null" \
      >/dev/null 2>&1 </dev/null &
  fi
}
wait_up() { # url pidfile
  for _ in $(seq 600); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$(cat "$2")" 2>/dev/null || { echo "openstack-up: $(basename "$2" .pid) died" >&2; tail -n 20 "${2%.pid}.out" >&2; exit 1; }
    sleep 0.1
  done
  echo "openstack-up: $1 did not answer within 60 s" >&2
  exit 1
}
start keystone $PY "$D/keystone_serve.py"
start glance $PY -m glance.cmd.api --config-file "$D/glance-api.conf"
wait_up "$KS/v3" "$D/keystone.pid"

$PY - "$KS/v3" "$GL" "$ADMIN_PW" "$USER_PW" "$D" >>"$D/manage.log" <<'EOF'
import json, sys, urllib.request as u
ks, gl, admin_pw, user_pw, d = sys.argv[1:]
def call(method, path, body=None, tok=None):
    req = u.Request(ks + path, json.dumps(body).encode() if body else None, method=method,
                    headers={'Content-Type': 'application/json', **({'X-Auth-Token': tok} if tok else {})})
    with u.urlopen(req) as r:
        return r.headers.get('X-Subject-Token'), json.loads(r.read() or b'{}')
def token(user, pw, project):
    return call('POST', '/auth/tokens', {'auth': {'identity': {'methods': ['password'], 'password': {'user': {
        'name': user, 'domain': {'id': 'default'}, 'password': pw}}}, 'scope': {'project': {
        'name': project, 'domain': {'id': 'default'}}}}})
tok, body = token('admin', admin_pw, 'admin')
roles = {r['name']: r['id'] for r in call('GET', '/roles', None, tok)[1]['roles']}
def project(name):
    return call('POST', '/projects', {'project': {'name': name, 'domain_id': 'default'}}, tok)[1]['project']['id']
def user(name, pw, proj, role):
    uid = call('POST', '/users', {'user': {'name': name, 'password': pw, 'domain_id': 'default'}}, tok)[1]['user']['id']
    call('PUT', f'/projects/{proj}/users/{uid}/roles/{roles[role]}', None, tok)
    return uid
service = project('service')
user('glance', 'glance-pw', service, 'admin')
proj = project('stackhost')
uid = user('stackhost', user_pw, proj, 'member')
svc = call('POST', '/services', {'service': {'type': 'image', 'name': 'glance'}}, tok)[1]['service']['id']
for iface in ('public', 'internal', 'admin'):
    call('POST', '/endpoints', {'endpoint': {'service_id': svc, 'interface': iface, 'url': gl, 'region_id': 'RegionOne'}}, tok)
utok, _ = token('stackhost', user_pw, 'stackhost')
ac = call('POST', f'/users/{uid}/application_credentials', {'application_credential': {'name': 'stackhost-tests'}}, utok)[1]['application_credential']
env = {'keystone': ks, 'glance': gl, 'region': 'RegionOne', 'domain': 'Default',
       'adminUser': 'admin', 'adminPassword': admin_pw, 'adminProject': 'admin',
       'user': 'stackhost', 'userId': uid, 'password': user_pw, 'project': 'stackhost', 'projectId': proj,
       'applicationCredentialId': ac['id'], 'applicationCredentialSecret': ac['secret'], 'dir': d}
json.dump(env, open(d + '/env.json.tmp', 'w'), indent=2)
def cloud(auth, auth_type='password'):
    return {'auth': {'auth_url': ks, **auth}, 'auth_type': auth_type, 'region_name': 'RegionOne',
            'interface': 'public', 'identity_api_version': 3}
clouds = {'clouds': {
    'stackhost': cloud({'username': 'stackhost', 'password': user_pw, 'project_name': 'stackhost',
                        'user_domain_name': 'Default', 'project_domain_name': 'Default'}),
    'stackhost-appcred': cloud({'application_credential_id': ac['id'], 'application_credential_secret': ac['secret']},
                               'v3applicationcredential'),
    'admin': cloud({'username': 'admin', 'password': admin_pw, 'project_name': 'admin',
                    'user_domain_name': 'Default', 'project_domain_name': 'Default'})}}
json.dump(clouds, open(d + '/clouds.yaml', 'w'), indent=2)  # JSON is YAML
EOF
wait_up "$GL/healthcheck" "$D/glance.pid"
mv "$D/env.json.tmp" "$D/env.json"
t_end=$(date +%s%3N)
trap - EXIT
echo "openstack-up: keystone $KS/v3 (pid $(cat "$D/keystone.pid")), glance $GL (pid $(cat "$D/glance.pid")): ready in $((t_end - t_installed)) ms (install check $((t_installed - t0)) ms)"
echo "openstack-up: credentials in $D/env.json, clouds in $D/clouds.yaml; stop with scripts/openstack-down.sh $D"
