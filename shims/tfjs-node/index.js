// danfojs-node imports @tensorflow/tfjs-node; inside danfojs-node that name resolves here (package.json
// overrides) and means the project's own @tensorflow/tfjs, hence the one tfjs-core and whatever backend
// the library started.
module.exports = require('@tensorflow/tfjs');
