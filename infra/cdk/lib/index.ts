// The construct library's entry point: the deployment construct and the module.yaml generator it uses.
export * from './statefun-deployment';
export * from './module-yaml';
