#!/bin/bash
# chatapp instance bootstrap, stage 2 (Amazon Linux 2023). Run as root by the launch template's
# user data (stage 1, in chatapp.yaml) from the release's source tree, /opt/chatapp/app, after it
# wrote /etc/chatapp/stack.env. Can be re-run by hand (it rebuilds the venv and restarts chatapp).
#
#   1. Python 3.11 venv in /opt/chatapp/venv with the app (`pip install /opt/chatapp/app`)
#   2. /etc/chatapp.env from Secrets Manager + the stack's settings (root:chatapp 0640)
#   3. systemd units from deploy/systemd, logs to /var/log/chatapp -> CloudWatch agent
#   4. `db-upgrade` (advisory-locked), `publish-static`, start chatapp + the daily archive timer
#   5. wait until /readyz answers 200
set -euo pipefail

APP=/opt/chatapp/app
VENV=/opt/chatapp/venv
ENV_FILE=/etc/chatapp.env
# shellcheck source=/dev/null
. /etc/chatapp/stack.env
export AWS_DEFAULT_REGION="$AWS_REGION"

log() { printf '== %s\n' "$*"; }

log "packages"
dnf install -y -q python3.11 python3.11-pip python3.11-devel gcc make \
    amazon-cloudwatch-agent logrotate

log "user"
if ! id chatapp >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/chatapp --no-create-home \
        --shell /sbin/nologin chatapp
fi
install -d -o chatapp -g chatapp -m 0750 /var/lib/chatapp
install -d -o root -g root -m 0750 /var/log/chatapp

log "virtualenv $VENV"
rm -rf "$VENV"
python3.11 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$APP"
chown -R root:root /opt/chatapp
chmod -R go-w /opt/chatapp

log "RDS certificate bundle"
curl -fsSL --retry 5 -o /etc/chatapp/rds-ca-bundle.pem \
    https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
chmod 0644 /etc/chatapp/rds-ca-bundle.pem

log "$ENV_FILE"
secret() {
    aws secretsmanager get-secret-value --secret-id "$1" --query SecretString --output text
}
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# KEY='value' lines: read by systemd's EnvironmentFile= and by bash (chatapp-manage).
kv() {
    case "$2" in
        *"'"* | *$'\n'* | *\\*)
            echo "refusing to write $1: the value contains a quote, backslash or newline" >&2
            return 1
            ;;
    esac
    printf "%s='%s'\n" "$1" "$2"
}

secret_key=$(secret "$SECRET_KEY_ARN")
db_json=$(secret "$DB_SECRET_ARN")
db_user=$(json_field username <<<"$db_json")
db_password=$(json_field password <<<"$db_json")
cache_token=$(secret "$CACHE_SECRET_ARN")
openai_key=$(secret "$OPENAI_SECRET_ARN")
metrics_token=$(secret "$METRICS_SECRET_ARN")

umask 077
tmp=$(mktemp "$ENV_FILE.XXXXXX")
{
    echo "# Written by deploy/bin/ec2-bootstrap.sh at boot; edits are lost on the next instance."
    kv SECRET_KEY "$secret_key"
    kv DATABASE_URL "postgresql://$db_user:$db_password@$DB_HOST:$DB_PORT/$DB_NAME?sslmode=verify-full&sslrootcert=/etc/chatapp/rds-ca-bundle.pem"
    kv REDIS_URL "rediss://:$cache_token@$REDIS_HOST:$REDIS_PORT/0"
    kv CHATAPP_REDIS_PREFIX "chatapp:"
    if [[ "$openai_key" != "UNSET" && -n "$openai_key" ]]; then kv OPENAI_API_KEY "$openai_key"; fi
    if [[ -n "$OPENAI_BASE_URL" ]]; then kv OPENAI_BASE_URL "$OPENAI_BASE_URL"; fi
    if [[ -n "$CHATAPP_MODELS" ]]; then kv CHATAPP_MODELS "$CHATAPP_MODELS"; fi
    if [[ -n "$CHATAPP_DEFAULT_MODEL" ]]; then kv CHATAPP_DEFAULT_MODEL "$CHATAPP_DEFAULT_MODEL"; fi
    kv ARCHIVE_URL "$ARCHIVE_URL"
    kv STATIC_PUBLISH_URL "$STATIC_PUBLISH_URL"
    kv STATIC_URL "$STATIC_URL"
    kv CHATAPP_TRUSTED_PROXIES "$TRUSTED_PROXIES"
    kv CHATAPP_METRICS_TOKEN "$metrics_token"
    kv CHATAPP_LOG_FORMAT json
    kv CHATAPP_INSTANCE_DIR /var/lib/chatapp
    kv AWS_REGION "$AWS_REGION"
    kv AWS_DEFAULT_REGION "$AWS_REGION"
    if [[ -n "$EXTRA_ENV" ]]; then
        IFS=';' read -r -a pairs <<<"$EXTRA_ENV"
        for pair in "${pairs[@]}"; do
            pair="${pair#"${pair%%[![:space:]]*}"}"
            [[ -z "$pair" ]] && continue
            key="${pair%%=*}"
            if [[ "$pair" != *=* || ! "$key" =~ ^[A-Z_][A-Z0-9_]*$ ]]; then
                echo "ExtraEnvironment: ignoring malformed entry (want KEY=value)" >&2
                continue
            fi
            kv "$key" "${pair#*=}"
        done
    fi
} >"$tmp"
umask 022
chown root:chatapp "$tmp"
chmod 0640 "$tmp"
mv -f "$tmp" "$ENV_FILE"
unset secret_key db_json db_password cache_token openai_key metrics_token

log "systemd units"
install -m 0644 "$APP/deploy/systemd/chatapp.service" \
    "$APP/deploy/systemd/chatapp-archive.service" \
    "$APP/deploy/systemd/chatapp-archive.timer" /etc/systemd/system/
install -m 0755 "$APP/deploy/bin/chatapp-manage" /usr/local/bin/chatapp-manage
# On EC2 the services write to files that the CloudWatch agent ships (it cannot read journald).
for unit in chatapp chatapp-archive; do
    install -d -m 0755 "/etc/systemd/system/$unit.service.d"
    cat >"/etc/systemd/system/$unit.service.d/10-ec2-logs.conf" <<EOF
[Service]
StandardOutput=append:/var/log/chatapp/$unit.log
StandardError=append:/var/log/chatapp/$unit.log
EOF
done
cat >/etc/logrotate.d/chatapp <<'EOF'
/var/log/chatapp/*.log {
    daily
    rotate 3
    compress
    delaycompress
    missingok
    notifempty
    copytruncate
}
EOF
systemctl daemon-reload

log "CloudWatch agent"
cat >/opt/aws/amazon-cloudwatch-agent/etc/chatapp.json <<EOF
{
  "agent": {"run_as_user": "root", "metrics_collection_interval": 60},
  "logs": {
    "logs_collected": {
      "files": {
        "collect_list": [
          {"file_path": "/var/log/chatapp/chatapp.log", "log_group_name": "$LOG_GROUP",
           "log_stream_name": "{instance_id}/app", "timezone": "UTC"},
          {"file_path": "/var/log/chatapp/chatapp-archive.log", "log_group_name": "$LOG_GROUP",
           "log_stream_name": "{instance_id}/archive", "timezone": "UTC"},
          {"file_path": "/var/log/chatapp-bootstrap.log", "log_group_name": "$LOG_GROUP",
           "log_stream_name": "{instance_id}/bootstrap", "timezone": "UTC"}
        ]
      }
    }
  },
  "metrics": {
    "namespace": "CWAgent",
    "append_dimensions": {"AutoScalingGroupName": "\${aws:AutoScalingGroupName}"},
    "aggregation_dimensions": [["AutoScalingGroupName"]],
    "metrics_collected": {
      "mem": {"measurement": ["mem_used_percent"]},
      "disk": {"measurement": ["used_percent"], "resources": ["/"]}
    }
  }
}
EOF
/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s \
    -c file:/opt/aws/amazon-cloudwatch-agent/etc/chatapp.json

log "database migrations"
/usr/local/bin/chatapp-manage db-upgrade

log "static assets -> $STATIC_PUBLISH_URL"
/usr/local/bin/chatapp-manage publish-static

log "start"
systemctl enable chatapp.service chatapp-archive.timer
systemctl restart chatapp.service
systemctl start chatapp-archive.timer

log "wait for /readyz"
for _ in $(seq 1 90); do
    if curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8000/readyz; then
        log "ready"
        exit 0
    fi
    sleep 2
done
echo "chatapp did not become ready in 3 minutes" >&2
systemctl --no-pager status chatapp.service || true
tail -n 50 /var/log/chatapp/chatapp.log || true
exit 1
