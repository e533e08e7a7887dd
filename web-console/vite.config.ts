import { defineConfig } from 'vite';

// The gateway embeds dist/index.html, dist/console.js and dist/console.css and serves them under
// /console, so the output names are fixed (no content hashes) and everything is one chunk.
export default defineConfig({
  base: '/console/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2022',
    modulePreload: false,
    cssCodeSplit: false,
    assetsInlineLimit: 0,
    rollupOptions: {
      output: {
        entryFileNames: 'console.js',
        chunkFileNames: 'console.js',
        assetFileNames: 'console.[ext]',
        inlineDynamicImports: true,
      },
    },
  },
  server: {
    // `npm run dev` against a gateway on :8080 (same origin for the cookie and the socket).
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/ws': { target: 'ws://127.0.0.1:8080', ws: true },
    },
  },
});
