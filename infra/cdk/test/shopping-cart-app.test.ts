// The example app (bin/shopping-cart.ts) as `cdk synth` builds it: its two stacks, the VPC it makes
// when given no subnets, the subnets it takes from context, and its image repository, mirroring
// infra/terraform/examples/shopping-cart.

import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { test } from 'node:test';
import { Template } from 'aws-cdk-lib/assertions';
import { buildApp } from '../bin/shopping-cart';
import { ACCOUNT, PARTITION, allStatements, asList, fakeArtifact, resolve, resourceWhere, resourcesOf, testApp, workerEnvironment } from './helpers';
import { TERRAFORM_SHOPPING_CART_MODULE_YAML } from './terraform-fixtures';

const EXAMPLE_REGION = 'us-east-1';

function build(context: Record<string, string> = {}) {
  const app = testApp({ artifact: fakeArtifact(), ...context });
  const stacks = buildApp(app);
  return {
    ...stacks,
    repositoryJson: Template.fromStack(stacks.repository).toJSON(),
    json: Template.fromStack(stacks.deployment).toJSON(),
  };
}

test('two stacks in us-east-1: the image repository, then the deployment', () => {
  const { repository, deployment, repositoryJson } = build();
  assert.deepEqual([repository.stackName, deployment.stackName], ['shopping-cart-image-repository', 'shopping-cart']);
  assert.equal(deployment.region, EXAMPLE_REGION);
  assert.ok(deployment.dependencies.includes(repository));
  const { resource } = resourceWhere(repositoryJson, 'AWS::ECR::Repository', 'RepositoryName', 'shopping-cart-runtime');
  const p = resource.Properties;
  assert.deepEqual(p.ImageScanningConfiguration, { ScanOnPush: true });
  // AES256 is ECR's default, which the CDK leaves unwritten.
  assert.deepEqual(p.EncryptionConfiguration ?? { EncryptionType: 'AES256' }, { EncryptionType: 'AES256' });
  assert.equal(p.ImageTagMutability, 'MUTABLE');
  assert.equal(p.EmptyOnDelete, true);
  const policy = JSON.parse(p.LifecyclePolicy.LifecyclePolicyText);
  assert.deepEqual(policy.rules[0].selection, { tagStatus: 'any', countType: 'imageCountMoreThan', countNumber: 10 });
});

test('without subnets: a VPC of public subnets and no NAT gateway, the worker with a public IP', () => {
  const { json } = build();
  assert.equal(Object.keys(resourcesOf(json, 'AWS::EC2::VPC')).length, 1);
  assert.equal(Object.keys(resourcesOf(json, 'AWS::EC2::NatGateway')).length, 0);
  const subnets = resourcesOf(json, 'AWS::EC2::Subnet');
  assert.equal(Object.keys(subnets).length, 2);
  for (const s of Object.values(subnets)) assert.equal(s.Properties.MapPublicIpOnLaunch, true);
  const [service] = Object.values(resourcesOf(json, 'AWS::ECS::Service'));
  const net = service.Properties.NetworkConfiguration.AwsvpcConfiguration;
  assert.equal(net.AssignPublicIp, 'ENABLED');
  assert.deepEqual(net.Subnets.map((r: any) => r.Ref).sort(), Object.keys(subnets).sort());
});

test('with vpcId and subnetIds from context: no VPC, those subnets, no public IP', () => {
  const { json } = build({ vpcId: 'vpc-0123456789abcdef0', subnetIds: 'subnet-0123456789abcdef1, subnet-0123456789abcdef2' });
  assert.equal(Object.keys(resourcesOf(json, 'AWS::EC2::VPC')).length, 0);
  const [service] = Object.values(resourcesOf(json, 'AWS::ECS::Service'));
  const net = service.Properties.NetworkConfiguration.AwsvpcConfiguration;
  assert.deepEqual(net.Subnets, ['subnet-0123456789abcdef1', 'subnet-0123456789abcdef2']);
  assert.equal(net.AssignPublicIp, 'DISABLED');
});

test("the deployment: the repository's image, its pull permission, the module.yaml, a bucket deleted with the stack", () => {
  const { json } = build();
  const [td] = Object.values(resourcesOf(json, 'AWS::ECS::TaskDefinition'));
  const container = td.Properties.ContainerDefinitions[0];
  assert.equal(resolve(container.Image), `${ACCOUNT}.dkr.ecr.${EXAMPLE_REGION}.amazonaws.com/shopping-cart-runtime:latest`);
  const exec = resourceWhere(json, 'AWS::IAM::Role', 'RoleName', 'shopping-cart-worker-execution').resource;
  const pull = resolve(exec.Properties.Policies[0].PolicyDocument.Statement).find((s: any) => s.Sid === 'PullImage');
  assert.equal(pull.Resource, `arn:${PARTITION}:ecr:${EXAMPLE_REGION}:${ACCOUNT}:repository/shopping-cart-runtime`);

  const aliasArn = `arn:${PARTITION}:lambda:${EXAMPLE_REGION}:${ACCOUNT}:function:shopping-cart-functions:live`;
  const env = workerEnvironment(json);
  assert.equal(env.STATEFUN_MODULE_YAML, TERRAFORM_SHOPPING_CART_MODULE_YAML(aliasArn));
  assert.equal(env.STATEFUN_REGION, EXAMPLE_REGION);
  assert.equal(resolve(json.Outputs.ModuleYaml.Value), env.STATEFUN_MODULE_YAML);
  assert.equal(JSON.parse(resolve(json.Outputs.StatefunEnvironment.Value)).STATEFUN_BUCKET, `shopping-cart-checkpoints-${ACCOUNT}`);

  // Terraform's force_destroy = true: the bucket goes with its objects.
  const [bucket] = Object.values(resourcesOf(json, 'AWS::S3::Bucket'));
  assert.equal(bucket.DeletionPolicy, 'Delete');
  assert.equal(Object.keys(resourcesOf(json, 'Custom::S3AutoDeleteObjects')).length, 1);
  // Only the shopping cart's function runs bootstrap; the other is the CDK's auto-delete handler.
  const bootstraps = Object.values(resourcesOf(json, 'AWS::Lambda::Function')).filter((f) => f.Properties.Handler === 'bootstrap');
  assert.deepEqual(bootstraps.map((f) => f.Properties.FunctionName), ['shopping-cart-functions']);
  // The stack's tag, as the Terraform example's default_tags.
  assert.ok(bucket.Properties.Tags.some((t: any) => t.Key === 'statefun:example' && t.Value === 'shopping-cart'));
});

test('no statement in either stack allows a data-plane action on "*"', () => {
  const { json, repositoryJson } = build();
  for (const t of [json, repositoryJson]) {
    for (const { where, statement } of allStatements(t)) {
      if (statement.Effect !== 'Allow') continue;
      const dataPlane = asList<string>(statement.Action).filter((a) => /^(kinesis|dynamodb|s3|lambda):/.test(a));
      if (dataPlane.length === 0) continue;
      assert.ok(!asList(resolve(statement.Resource)).includes('*'), `${where}: ${dataPlane.join(', ')}`);
    }
  }
});

test('a missing function artifact is refused with the command that builds it', () => {
  assert.throws(() => build({ artifact: path.join(fakeArtifact(), 'missing.zip') }), /cargo lambda build --release --arm64/);
});
