#!/usr/bin/env bash
# Deploys the shopping cart to an AWS account with infra/terraform/examples/shopping-cart:
#
#   scripts/deploy.sh [apply]    build the functions' Lambda zip and the runtime image, create the
#                                image repository, push the image, apply everything
#   scripts/deploy.sh plan       build the zip and show what apply would change (pushes nothing)
#   scripts/deploy.sh destroy    delete everything the deployment created (checkpoints included)
#   scripts/deploy.sh env        print `export` lines pointing the statefun CLI at the deployment:
#                                eval "$(scripts/deploy.sh env)"
#
# Extra arguments go to terraform (e.g. `scripts/deploy.sh apply -var desired_count=2`).
#
# Settings (environment):
#   AWS_REGION         region (default us-east-1); credentials come from the usual AWS configuration
#   STATEFUN_NAME      name of the deployment, prefix of every resource (default shopping-cart)
#   DOCKER_PLATFORM    platform the runtime image is built for: linux/arm64 or linux/amd64 (default:
#                      the Docker engine's own, so no emulation); the Fargate tasks run on the same
#
# Needs terraform (>= 1.5), docker (with BuildKit), the aws CLI, cargo and python3. cargo-lambda (with the
# Zig toolchain it cross-compiles with, both from PyPI) is installed into .local/deploy/ when
# missing. The Terraform state stays in infra/terraform/examples/shopping-cart (git-ignored): keep it,
# or configure a remote backend there, to change or destroy the deployment later. The values the
# last apply used are kept in .local/deploy/<name>.tfvars.json for plan and destroy.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLE="$REPO/infra/terraform/examples/shopping-cart"
BASE="$REPO/.local/deploy"
CARGO_LAMBDA_VENV="$BASE/venv-cargo-lambda"
CARGO_LAMBDA_PIN="cargo-lambda==1.9.2"
ARTIFACT="$REPO/target/lambda/shopping-cart/bootstrap.zip"

REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
NAME="${STATEFUN_NAME:-shopping-cart}"
VARS="$BASE/$NAME.tfvars.json"

say() { echo "deploy: $*"; }
fail() {
    echo "deploy: error: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || fail "'$1' not found: $2"
}

terraform_in_example() {
    terraform -chdir="$EXAMPLE" "$@"
}

# cargo-lambda from PyPI, with ziglang (its cross-compiling linker), in a venv of its own.
ensure_cargo_lambda() {
    if [[ -x "$CARGO_LAMBDA_VENV/bin/cargo-lambda" && -f "$CARGO_LAMBDA_VENV/.installed" &&
        "$(cat "$CARGO_LAMBDA_VENV/.installed")" == "$CARGO_LAMBDA_PIN" ]]; then
        return 0
    fi
    say "installing $CARGO_LAMBDA_PIN (and ziglang) into ${CARGO_LAMBDA_VENV#"$REPO/"}"
    rm -rf "$CARGO_LAMBDA_VENV"
    python3 -m venv "$CARGO_LAMBDA_VENV"
    "$CARGO_LAMBDA_VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet "$CARGO_LAMBDA_PIN"
    echo "$CARGO_LAMBDA_PIN" >"$CARGO_LAMBDA_VENV/.installed"
}

build_functions() {
    ensure_cargo_lambda
    if command -v rustup >/dev/null 2>&1; then
        rustup target add aarch64-unknown-linux-gnu >/dev/null
    fi
    say "building the functions for Lambda (arm64): ${ARTIFACT#"$REPO/"}"
    # The venv first on PATH: cargo-lambda finds its Zig through `python3 -m ziglang`.
    (cd "$REPO" && PATH="$CARGO_LAMBDA_VENV/bin:$PATH" cargo lambda build --release --arm64 --output-format zip \
        --lambda-dir "$REPO/target/lambda" -p shopping-cart)
    [[ -f "$ARTIFACT" ]] || fail "cargo lambda build did not write $ARTIFACT"
}

# The image tag: the commit, marked when the tree has changes.
image_tag() {
    local tag
    tag="$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo build)"
    if [[ -n "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]]; then
        tag="$tag-dirty-$(date -u +%Y%m%d%H%M%S)"
    fi
    echo "$tag"
}

docker_platform() {
    if [[ -n "${DOCKER_PLATFORM:-}" ]]; then
        echo "$DOCKER_PLATFORM"
        return
    fi
    case "$(docker version --format '{{.Server.Arch}}')" in
        arm64 | aarch64) echo linux/arm64 ;;
        amd64 | x86_64) echo linux/amd64 ;;
        *) fail "unknown Docker engine architecture; set DOCKER_PLATFORM to linux/arm64 or linux/amd64" ;;
    esac
}

fargate_architecture() {
    case "$1" in
        linux/arm64) echo ARM64 ;;
        linux/amd64) echo X86_64 ;;
        *) fail "DOCKER_PLATFORM must be linux/arm64 or linux/amd64, not $1" ;;
    esac
}

# write_vars FILE IMAGE ARCH: the variables of this deployment.
write_vars() {
    mkdir -p "$(dirname "$1")"
    printf '{"region": "%s", "name": "%s", "image": "%s", "worker_cpu_architecture": "%s", "artifact": "%s"}\n' \
        "$REGION" "$NAME" "$2" "$3" "$ARTIFACT" >"$1"
}

cmd_apply() {
    need terraform "install Terraform >= 1.5"
    need docker "install Docker (the runtime image is built locally)"
    need aws "install the AWS CLI (it logs Docker in to ECR)"
    need cargo "install the Rust toolchain (https://rustup.rs)"
    need python3 "install Python 3 (cargo-lambda comes from PyPI)"
    docker info >/dev/null 2>&1 || fail "the Docker engine does not answer (docker info)"

    local account registry repository tag platform architecture image
    account="$(aws sts get-caller-identity --query Account --output text)" || fail "no AWS credentials (aws sts get-caller-identity)"
    registry="$account.dkr.ecr.$REGION.amazonaws.com"
    repository="$registry/$NAME-runtime"
    tag="$(image_tag)"
    platform="$(docker_platform)"
    architecture="$(fargate_architecture "$platform")"
    image="$repository:$tag"
    say "deployment $NAME in account $account, region $REGION; worker image $image ($platform)"

    build_functions
    write_vars "$VARS" "$image" "$architecture"
    terraform_in_example init -input=false

    say "creating the image repository"
    terraform_in_example apply -input=false -auto-approve -var-file="$VARS" -target=aws_ecr_repository.runtime "$@"

    say "building and pushing the runtime image"
    DOCKER_BUILDKIT=1 docker build --platform "$platform" -t "$image" "$REPO"
    aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin "$registry"
    docker push "$image"

    say "applying the deployment"
    terraform_in_example apply -input=false -var-file="$VARS" "$@"
    say "done; point the statefun CLI at it with: eval \"\$(scripts/deploy.sh env)\""
}

cmd_plan() {
    need terraform "install Terraform >= 1.5"
    local vars="$VARS" account image
    if [[ -f "$VARS" ]]; then
        say "with the variables of the last apply (${VARS#"$REPO/"})"
    else
        need aws "install the AWS CLI"
        account="$(aws sts get-caller-identity --query Account --output text)" || fail "no AWS credentials (aws sts get-caller-identity)"
        image="$account.dkr.ecr.$REGION.amazonaws.com/$NAME-runtime:$(image_tag)"
        vars="$BASE/plan-$NAME.tfvars.json"
        write_vars "$vars" "$image" "$(fargate_architecture "${DOCKER_PLATFORM:-linux/arm64}")"
    fi
    build_functions
    terraform_in_example init -input=false
    terraform_in_example plan -input=false -var-file="$vars" "$@"
}

# `export` lines for the statefun CLI: the region, the STATEFUN_* variables of the deployment and
# its module.yaml (which `statefun send` encodes records by) written to .local/deploy/<name>-module.yaml.
cmd_env() {
    need terraform "install Terraform >= 1.5"
    need python3 "install Python 3"
    local module="$BASE/$NAME-module.yaml"
    mkdir -p "$BASE"
    terraform_in_example output -raw module_yaml >"$module"
    printf 'export AWS_REGION=%q\n' "$REGION"
    printf 'export STATEFUN_MODULE=%q\n' "$module"
    terraform_in_example output -json statefun_environment |
        python3 -c 'import json, shlex, sys; [print(f"export {k}={shlex.quote(v)}") for k, v in json.load(sys.stdin).items()]'
}

cmd_destroy() {
    need terraform "install Terraform >= 1.5"
    [[ -f "$VARS" ]] || fail "no ${VARS#"$REPO/"}: nothing deployed from here under the name $NAME (STATEFUN_NAME)"
    # Destroying evaluates the configuration, which hashes the artifact: any zip will do.
    if [[ ! -f "$ARTIFACT" ]]; then
        mkdir -p "$(dirname "$ARTIFACT")"
        printf 'PK\005\006\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0' >"$ARTIFACT"
    fi
    terraform_in_example init -input=false
    terraform_in_example destroy -input=false -var-file="$VARS" "$@"
    rm -f "$VARS"
}

verb="${1:-apply}"
[[ $# -gt 0 ]] && shift
case "$verb" in
    apply) cmd_apply "$@" ;;
    plan) cmd_plan "$@" ;;
    destroy) cmd_destroy "$@" ;;
    env) cmd_env ;;
    *)
        echo "usage: $0 [apply|plan|destroy|env] [terraform arguments...]" >&2
        exit 2
        ;;
esac
