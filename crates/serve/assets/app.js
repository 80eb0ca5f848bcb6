// The upload page of `petal serve`. Served as its own file so that the Content-Security-Policy
// can forbid inline scripts. Text from the server is inserted with textContent only.
'use strict';

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem('petal-token') || '';

function authHeaders() {
  return token ? { Authorization: 'Bearer ' + token } : {};
}

function setStatus(text, isError) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('error', Boolean(isError));
}

async function loadModels() {
  let r;
  try {
    r = await fetch('/v1/models', { headers: authHeaders() });
  } catch (e) {
    setStatus('The server cannot be reached.', true);
    return;
  }
  if (r.status === 401) {
    $('token-row').hidden = false;
    setStatus(token ? 'That access token is not valid.' : 'This server needs an access token.', true);
    $('token').focus();
    return;
  }
  if (!r.ok) {
    setStatus('Could not list the models (HTTP ' + r.status + ').', true);
    return;
  }
  const body = await r.json();
  const select = $('model');
  select.replaceChildren();
  for (const m of body.models) {
    const opt = document.createElement('option');
    opt.value = m.name;
    opt.textContent = m.name + ' (' + m.arch + ', ' + m.num_classes + ' classes)';
    select.append(opt);
  }
  setStatus(body.models.length ? 'Ready: choose a photo.' : 'No model is served.', !body.models.length);
}

function render(prediction, response) {
  const top = prediction.top;
  $('top1').textContent = top.length ? top[0].name : '';
  const bars = $('bars');
  bars.replaceChildren();
  for (const c of top) {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = c.name;
    const pct = document.createElement('span');
    pct.className = 'pct';
    pct.textContent = (100 * c.prob).toFixed(1) + ' %';
    const bar = document.createElement('span');
    bar.className = 'bar';
    const fill = document.createElement('span');
    fill.className = 'fill';
    fill.style.width = Math.max(0.5, 100 * c.prob).toFixed(1) + '%';
    bar.append(fill);
    li.append(name, pct, bar);
    bars.append(li);
  }
  const t = response.timing_ms;
  $('meta').textContent =
    response.model + ' · checkpoint ' + response.checkpoint_sha256.slice(0, 12) + ' · ' + t.total.toFixed(0) + ' ms (batch of ' + t.batch_images + ')';
  $('result').hidden = false;
}

async function predict(file) {
  if (!file) return;
  const model = $('model').value;
  if (!model) {
    setStatus('No model to ask.', true);
    return;
  }
  const preview = $('preview');
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  const k = Math.max(1, parseInt($('topk').value, 10) || 5);
  setStatus('Asking ' + model + '…');
  let r;
  try {
    r = await fetch('/v1/models/' + encodeURIComponent(model) + '/predict?top_k=' + k, {
      method: 'POST',
      headers: Object.assign({ 'Content-Type': file.type || 'application/octet-stream' }, authHeaders()),
      body: file,
    });
  } catch (e) {
    setStatus('The server cannot be reached.', true);
    return;
  }
  let body = null;
  try {
    body = await r.json();
  } catch (e) {
    body = null;
  }
  if (!r.ok) {
    const why = body && body.error ? body.error.message : 'HTTP ' + r.status;
    setStatus('Not predicted: ' + why, true);
    $('result').hidden = true;
    return;
  }
  render(body.predictions[0], body);
  setStatus('Done: ' + body.predictions[0].top[0].name + '.');
}

function setup() {
  $('form').addEventListener('submit', (e) => e.preventDefault());
  $('file').addEventListener('change', (e) => predict(e.target.files[0]));
  $('token').value = token;
  $('token').addEventListener('change', (e) => {
    token = e.target.value.trim();
    sessionStorage.setItem('petal-token', token);
    loadModels();
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer && e.dataTransfer.files.length) predict(e.dataTransfer.files[0]);
  });
  loadModels();
}

setup();
