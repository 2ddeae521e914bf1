// Placeholder: replaced by the embedded Postgres bootstrap.
export default async function setup() {}
